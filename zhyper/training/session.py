"""A training process's place in the run: distributed set-up, the output folder's lock, a launcher watchdog.

- The shipped base model is converted (first run on a machine) before any process group exists.
- Global rank 0 holds an exclusive lock on ``<output_dir>/.zhyper-run.lock`` for the whole run and
  records its PID, host and start time beside it; a second live run on the same folder is refused
  with those details (the OS releases the lock when the holder dies, however it dies).
- Every rank watches the launcher that started it (its parent, and the ``deepspeed`` /
  ``torchrun`` runner above that): when one of them is gone, the rank exits within a couple of
  seconds instead of training on as an orphan.
- DeepSpeed's CPU backend builds (JIT, ninja, a lock under ~/.cache/torch_extensions) a shared-memory
  all-reduce for inference and maps a 69 MB segment per rank
  (``/dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>``) that it never unlinks: every
  run would leave 69 MB per rank in RAM until reboot, and a build killed half-way leaves a lock that
  hangs every later run. Training never uses that all-reduce, so ``init_distributed`` turns it off;
  should a DeepSpeed version create the segment anyway, each rank unlinks its name once every peer
  has mapped it (the mappings live on until the process ends, however it ends).
- Interrupts: SIGTERM raises ``Interrupted`` (a ``KeyboardInterrupt``, as Ctrl-C's SIGINT does) in
  the training loop; ``abort(status)`` then runs the cleanups registered with ``on_abort`` once (the
  MLflow run ends KILLED or FAILED, the run's record ``.zhyper-run.json`` is removed and the lock
  released). The last complete checkpoint is never touched: ``latest`` moves only after a save has
  finished. The watchdog runs the same cleanups before it ends an orphaned rank.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("zhyper.train")

LOCK_FILE = ".zhyper-run.lock"
HOLDER_FILE = ".zhyper-run.json"
_LAUNCHERS = ("deepspeed", "torchrun", "torch.distributed.run", "mpirun")
_ABORT_HOOKS: list = []
_ABORT_LOCK = threading.Lock()  # the main thread and the watchdog may both clean up: one does, the other waits
_SIGNALLED: list[str] = []
_STOPPING: list[bool] = []  # set once the run is ending: further SIGINT/SIGTERM are ignored


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal (SIGTERM; Ctrl-C raises KeyboardInterrupt itself)."""


def on_abort(hook) -> None:
    """Register ``hook(status)`` to run once if the run ends early (status ``KILLED`` or ``FAILED``)."""
    _ABORT_HOOKS.append(hook)


def abort(status: str) -> None:
    """Run the registered cleanups once, newest first; each failure is logged, none stops the others.
    Further SIGINT/SIGTERM (the launcher sends SIGTERM right after Ctrl-C) are ignored meanwhile."""
    import signal

    _STOPPING.append(True)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    if not _ABORT_LOCK.acquire(timeout=20):  # another thread's cleanup hangs: give up, the process is ending
        return
    try:
        while _ABORT_HOOKS:
            hook = _ABORT_HOOKS.pop()
            try:
                hook(status)
            except Exception as err:  # cleanup is best effort: the run is ending anyway
                log.warning("cleanup after the interrupted run failed: %s: %s", type(err).__name__, err)
    finally:
        _ABORT_LOCK.release()


def signalled() -> str | None:
    """The name of the signal that asked this process to stop, if any."""
    return _SIGNALLED[0] if _SIGNALLED else None


def handle_signals() -> None:
    """SIGTERM raises ``Interrupted`` in the main thread (Python's default would end the process at once,
    with no cleanup); SIGINT keeps raising KeyboardInterrupt. Both are noted for ``signalled``."""
    import signal

    def stop(signum, frame):
        name = signal.Signals(signum).name
        if _SIGNALLED or _STOPPING:  # already stopping (the launcher sends SIGTERM right after Ctrl-C's SIGINT)
            return
        _SIGNALLED.append(name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt(name)
        raise Interrupted(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


@dataclass
class Session:
    rank: int
    world: int
    local_rank: int
    device: object  # torch.device
    out_dir: Path
    ckpt_dir: Path
    _lock: object = field(default=None, repr=False)
    _memory: dict = field(default_factory=dict, repr=False)

    @property
    def master(self) -> bool:
        """Only global rank 0 writes logs, MLflow and files."""
        return self.rank == 0

    def record_memory(self, phase: str) -> None:
        """Note this rank's peak resident memory so far under ``phase`` (written by ``close``)."""
        self._memory[phase] = peak_rss_bytes()

    def close(self) -> None:
        """Write ``memory_rank<r>.json`` (peak host memory per phase, bytes) and release the run lock."""
        from zhyper.io import atomic_write

        self.record_memory("end")
        atomic_write(self.out_dir / f"memory_rank{self.rank}.json", json.dumps(
            {"rank": self.rank, "world": self.world, "peak_rss_bytes": self._memory}, indent=1) + "\n")
        self.release()

    def release(self, status: str | None = None) -> None:
        """Remove the run's record (``.zhyper-run.json``) and release the lock (rank 0; idempotent)."""
        if self._lock is not None:
            release_lock(self.out_dir, self._lock)
            self._lock = None


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec. ``getrusage``'s ru_maxrss does
    not: a process started by a large parent (pytest, a notebook) reports the parent's size at fork.
    Elsewhere ru_maxrss (bytes on macOS).
    """
    import resource
    import sys

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return rss if sys.platform == "darwin" else rss * 1024


def lock_output_dir(out_dir: Path):
    """Take the run lock of ``out_dir`` without waiting; a live holder is named in the error."""
    from zhyper.io import try_lock

    lock = try_lock(out_dir / LOCK_FILE)
    if lock is None:
        try:
            holder = json.loads((out_dir / HOLDER_FILE).read_text())
            who = f"PID {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
        except (OSError, ValueError):
            who = "a process that has not recorded itself yet"
        raise SystemExit(f"output_dir {out_dir} is in use by another training run ({who}); wait for it to end, "
                         "stop it, or choose another output_dir") from None
    from zhyper.io import atomic_write

    atomic_write(out_dir / HOLDER_FILE, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                    "argv": sys.argv}) + "\n")
    return lock


def release_lock(out_dir: Path, lock) -> None:
    """Remove the run's record, then release the lock (the empty lock file stays: deleting a lock file
    another process may have opened would let two runs hold "the" lock at once)."""
    if lock.is_locked:  # the lock is not thread-local: the watchdog's cleanup thread sees it too
        (out_dir / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()


def launcher_pids() -> list[int]:
    """The processes whose death must end this rank: the parent, and the launcher runner above it."""
    import psutil

    me = psutil.Process()
    parent = me.parent()
    if parent is None or parent.pid == 1:
        return []
    watched = [parent.pid]
    try:
        grand = parent.parent()
        if grand is not None and grand.pid != 1 and any(k in " ".join(grand.cmdline()) for k in _LAUNCHERS):
            watched.append(grand.pid)
    except psutil.Error:
        pass
    return watched


def shm_segment(rank: int) -> Path:
    """The shared-memory name DeepSpeed's CPU all-reduce gives this run's ``rank`` (from MASTER_ADDR/PORT)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return Path("/dev/shm") / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def init_distributed(backend: str | None = None) -> None:
    """``deepspeed.init_distributed`` that leaves nothing in /dev/shm (see the module's docstring)."""
    import deepspeed.ops
    import torch
    import torch.distributed as dist

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # see the module's docstring
    deepspeed.init_distributed(dist_backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    dist.barrier()  # every rank has opened every peer's segment: the names are no longer needed
    shm_segment(dist.get_rank()).unlink(missing_ok=True)


def watch_launcher(pids: list[int], interval: float = 1.0) -> threading.Thread | None:
    """A daemon thread that ends this process when any of ``pids`` has exited, or when one of them
    whose parent is also watched (the per-node launcher under the runner) lost that parent.

    The topmost watched process may lose its own parent: ``nohup deepspeed ... &`` from a shell
    that then exits hands the runner to init, and the run must go on.
    """
    import psutil

    if not pids:
        return None
    procs = [psutil.Process(p) for p in pids]
    parents = [p.ppid() if p.ppid() in pids else None for p in procs]  # only links inside the chain

    def gone(p, parent) -> bool:
        try:
            return p.status() == psutil.STATUS_ZOMBIE or (parent is not None and p.ppid() != parent)
        except psutil.NoSuchProcess:
            return True

    def watch():
        while True:
            time.sleep(interval)
            for p, parent in zip(procs, parents):
                if gone(p, parent):
                    log.error("the launcher (PID %d) is gone; this rank stops", p.pid)
                    cleanup = threading.Thread(target=abort, args=("KILLED",), daemon=True)
                    cleanup.start()
                    cleanup.join(15)  # MLflow and the run's record; never wait long for an orphan
                    logging.shutdown()
                    os._exit(143)

    thread = threading.Thread(target=watch, name="zhyper-launcher-watchdog", daemon=True)
    thread.start()
    return thread


def start(cfg, resume: str | None, local_rank: int, overwrite: bool = False) -> Session:
    """Set up this process: base conversion, output folder check, lock, watchdog, process group, logging,
    resume check. ``overwrite``: write into a folder that holds other files (``--overwrite``)."""
    import torch
    import torch.distributed as dist

    from zhyper.training.output import check_output_dir, mark_output_dir
    from zhyper.training.resume import check_resumable, latest_tag, verify

    from zhyper.base_model import needs_conversion, tokenizer_source

    if needs_conversion(cfg.base_model):  # convert the shipped model (first run) before any process group
        tokenizer_source(cfg.base_model)  # exists: under one, transformers saves on rank 0 only
    out_dir = Path(cfg.output_dir)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:
        check_output_dir(out_dir, overwrite)
        lock = lock_output_dir(out_dir)
        on_abort(lambda status: release_lock(out_dir, lock))
        mark_output_dir(out_dir)
    if "LOCAL_RANK" in os.environ:  # started by a launcher: stop when it stops
        watch_launcher(launcher_pids())
    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s")
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    session = Session(rank, world, local_rank, device, out_dir, out_dir / "checkpoints", lock)
    if not resume and latest_tag(session.ckpt_dir) is not None:
        raise SystemExit(f"{session.ckpt_dir} already holds a checkpoint: pass --resume to continue it, "
                         "or choose another output_dir")
    if resume:
        tag = latest_tag(session.ckpt_dir) if resume in (True, "latest") else resume
        step = int(tag[4:]) if tag and tag.startswith("step") and tag[4:].isdigit() else -1
        # a finished run with an intact last checkpoint (a damaged one is named by the resume check instead)
        if step >= cfg.train.max_steps and (out_dir / "final").is_dir() and verify(session.ckpt_dir / tag) is None:
            raise SystemExit(f"{out_dir} is a finished run ({tag} of train.max_steps={cfg.train.max_steps}, final/ "
                             "written): nothing to resume. Raise train.max_steps to train on from it, or choose "
                             "another output_dir")
        if tag:  # another run's step folder, or changed model settings: refused before anything loads
            check_resumable(session.ckpt_dir, tag, cfg, out_dir)
    return session
