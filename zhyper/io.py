"""Writing files so that nothing is ever half-written, and locking so that processes take turns.

Every file zhyper writes goes through here:

- ``atomic_write(path, data)``: a temporary sibling, fsync, then ``os.replace`` (readers see the old
  file or the new one, never a torn one);
- ``atomic_folder(out_dir)``: build a folder's new files in a temporary sibling, then move them in
  one by one, each with ``os.replace``. Files already in ``out_dir`` that zhyper did not write now
  stay untouched (``save_pretrained`` in transformers behaves the same way);
- files and folders get the modes a plain ``open()`` / ``mkdir`` gives (0o666 / 0o777 less the
  umask), whatever the temporary files or the writer (safetensors writes private files) started with;
- ``file_lock(path)``: an exclusive inter-process lock (``filelock``), with a timeout that names the
  lock file when another process holds it too long.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _user_path_error(err: OSError, path: Path) -> OSError:
    """``err`` re-worded to name ``path`` (what the user asked for), not the hidden temporary sibling."""
    reason = (err.strerror or str(err)).lower()
    return type(err)(err.errno, f"cannot write {path}: {reason} (it is written through a temporary file in "
                                f"{path.parent}, a folder that must exist or be creatable, and be writable)")


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if err.errno is None:  # zhyper's own wording (NotADirectoryError etc. with a message): keep it
            raise
        raise _user_path_error(err, path) from err


def current_umask() -> int:
    """The process's umask (Linux: read from /proc, so it is never changed, even for a moment)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_modes(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes a plain ``open()`` / ``mkdir`` would: 0o666 / 0o777 less the
    umask (temporary files and folders are private; safetensors writes its files private too)."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and one rename; returns the path.

    An error of the file system names ``path``, not the temporary sibling."""
    path = Path(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with _naming(path):
        _write_and_replace(fd, tmp, path, data)
    return path


def _write_and_replace(fd: int, tmp: str, path: Path, data: bytes | str) -> None:
    """Fill the temporary file, fsync, then one rename onto ``path``; the temporary file never stays behind."""
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private: give it a plain open()'s mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same existing folder (or ``b`` lies inside ``a``)."""
    try:
        ra, rb = Path(a).resolve(), Path(b).resolve()
    except OSError:
        return False
    return ra == rb or ra in rb.parents


@contextmanager
def atomic_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success its files are moved into ``out_dir``.

    Each new file replaces the file of the same name in one rename, so a crash leaves every file
    either old or new, never half-written. Other files already in ``out_dir`` (the user's own,
    or another tool's) are kept. On error the temporary folder is removed and ``out_dir`` is
    unchanged.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder; expected a folder (or nothing) there")
    with _naming(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp.", dir=out_dir.parent))
    try:
        yield tmp
        plain_modes(tmp)
        with _naming(out_dir):
            _move_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_in(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp``'s files into ``out_dir`` (one rename for the whole folder when it does not exist yet)."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)  # one rename: the whole folder appears at once
        return
    for src in sorted(tmp.rglob("*")):
        dst = out_dir / src.relative_to(tmp)
        if src.is_dir():
            if dst.exists() and not dst.is_dir():
                raise NotADirectoryError(f"{dst} exists and is not a folder; cannot write {src.name} there")
            dst.mkdir(exist_ok=True)
        else:
            if dst.is_dir():
                raise IsADirectoryError(f"{dst} is a folder; cannot replace it with a file")
            os.replace(src, dst)


@contextmanager
def replaced_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it takes the place of ``out_dir`` whole, in one rename
    (a folder already there is first moved aside, then removed: only for a folder the caller wrote).
    On error the temporary folder is removed and ``out_dir`` is unchanged."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        plain_modes(tmp)  # mkdtemp makes it private; what zhyper writes is shared like any HF folder
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def try_lock(path: str | os.PathLike):
    """An exclusive lock on ``path`` taken without waiting (a ``filelock.FileLock``, held until its
    ``release()``; not thread-local, so a cleanup thread can release it), or None when another holds it."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


@contextmanager
def file_lock(path: str | os.PathLike, timeout: float = -1, what: str = "this resource") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block.

    ``timeout`` seconds (-1: wait forever); on timeout a TimeoutError names the lock file.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(f"another process holds the lock on {what} ({path}) for over {timeout:g} s; "
                           "wait for it, or remove the lock file if that process is gone") from None
    try:
        yield
    finally:
        lock.release()


def read_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of the file ``path``, or one clear error naming ``what`` it is (``"run config"``,
    ``"--ds_config"``) and the path: FileNotFoundError ``... does not exist``, IsADirectoryError
    ``... is a directory; expected a file``, ValueError ``... is not UTF-8 text``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory; expected a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r}); "
                         "expected a UTF-8 file") from None
