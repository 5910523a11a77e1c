"""Checkpoints by Hugging Face hub id: ``ZhyperModel.from_pretrained("org/name", revision=...)`` and ``push_to_hub``.

Resolving what ``from_pretrained`` was given (``resolve``): a local folder of that name always wins;
otherwise an ``org/name`` id goes through huggingface_hub's own cache and download
(``snapshot_download``, as PEFT and transformers do: ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, tokens), which
fetches only the files of a checkpoint (``CHECKPOINT_FILES``). The snapshot folder is then loaded by
``zhyper.pretrained.load_checkpoint`` with every check a local folder gets (fields, tensors, SHA-256,
base), and an error names the hub id and revision. An id that is neither cached nor reachable, an
unknown repository or revision, and a malformed id are errors that say which, naming the id.

A model loaded from the hub records ``model.checkpoint_hub`` (id, revision, commit, cache folder):
``save_pretrained``, ``export_peft`` and ``merge`` never write into that repository's cache.

``push(model, repo_id)`` writes the model with ``save_pretrained`` (card included) into a fresh
temporary folder and uploads exactly that folder (``push_folder``: ``HfApi.upload_folder``). With
``HF_HUB_OFFLINE=1`` it fails at once, before writing anything.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

CONTEXTS_FILE = "contexts.json"  # zhyper.serving.contexts: the contexts of a run's final/, for `zhyper serve`


def checkpoint_files() -> list[str]:
    """The files of a checkpoint folder that are downloaded and uploaded (nothing else of a repository)."""
    from zhyper.card import CARD_FILE
    from zhyper.pretrained import CONFIG_FILE, WEIGHTS_FILE

    return [CONFIG_FILE, WEIGHTS_FILE, CONTEXTS_FILE, CARD_FILE]


def _offline() -> bool:
    """huggingface_hub's offline switch, read now (its constant is read once, at import)."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or now.strip().upper() in ("1", "ON", "YES", "TRUE")


def check_repo_id(repo_id, action: str = "from_pretrained") -> str:
    """``repo_id`` as a hub id ``org/name``; else a ValueError naming it and the expected form."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"{action}: {repo_id!r} is not a hub id: expected 'org/name' (one '/', letters, digits, "
                         "'-', '_', '.')")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{action}: {repo_id!r} is not a valid hub id 'org/name': {str(err).split(':')[0]}") from None
    return repo_id


def _check_revision(revision) -> None:
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ValueError(f"from_pretrained: revision: expected a branch, tag or commit of the hub repository "
                         f"(a non-empty string) or None, got {revision!r}")


def resolve(source, revision: str | None = None, cache_dir=None, token=None) -> tuple[Path, dict | None]:
    """(folder to load, hub record or None): a local folder first, else the hub id's snapshot in the cache
    (downloaded when the hub is reachable)."""
    _check_revision(revision)
    if isinstance(source, os.PathLike):
        return Path(source), None
    if not isinstance(source, str) or not source:
        raise TypeError(f"from_pretrained: expected a checkpoint folder or a hub id 'org/name', got {source!r}")
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            logger.warning("%s is a local folder: it is loaded, and revision=%r (for hub ids) is ignored", path,
                           revision)
        return path, None
    if path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1 or "\\" in source:
        raise FileNotFoundError(f"{source} not found: no such checkpoint folder (and not a hub id 'org/name')")
    if "/" not in source:
        raise FileNotFoundError(f"{source} not found: no such checkpoint folder; a hub id has the form 'org/name'")
    return download(check_repo_id(source), revision, cache_dir, token)


def _where(repo_id: str, revision: str | None) -> str:
    return f"hub checkpoint {repo_id!r} (revision {revision or 'main'!r})"


def download(repo_id: str, revision: str | None = None, cache_dir=None, token=None) -> tuple[Path, dict]:
    """The snapshot folder of ``repo_id`` at ``revision`` in huggingface_hub's cache, fetched if needed and
    possible, and its hub record; errors name the id and revision and say what to do."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, IncompleteSnapshotError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    from zhyper import __version__

    where = _where(repo_id, revision)
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                   allow_patterns=checkpoint_files(), library_name="zhyper",
                                   library_version=__version__)
    except IncompleteSnapshotError as err:
        missing = re.search(r"\d+ file\(s\) are missing \([^)]*\)", str(err))
        raise FileNotFoundError(f"{where}: its snapshot in the hub cache {cache} is incomplete "
                                f"({missing.group(0) if missing else err}) and the hub cannot be reached to "
                                "complete it; download it again with network access") from None
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE is set" if _offline() else "no connection")
        raise FileNotFoundError(f"{where}: not a local folder, not in the hub cache {cache}, and the hub cannot be "
                                f"reached ({why}); download it once with network access (`hf download {repo_id}`), "
                                "or pass its local folder") from None
    except GatedRepoError:
        raise PermissionError(f"{where}: the repository is gated; accept its conditions on the hub and log in "
                              "(`hf auth login`, or token=)") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{where}: no such model repository on the hub (or it is private and no valid token "
                                "was given: `hf auth login`, or token=)") from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{where}: the repository has no revision {revision!r} (expected a branch, tag or "
                                "commit of it)") from None
    except HfHubHTTPError as err:
        raise OSError(f"{where}: the hub refused the download ({str(err).splitlines()[0]})") from None
    folder = Path(folder)
    return folder, {"repo_id": repo_id, "revision": revision or "main", "commit": folder.name,
                    "storage": folder.parents[1].resolve()}


def load(cls, source, revision: str | None = None, cache_dir=None, token=None, **kwargs):
    """``load_checkpoint(cls, folder, **kwargs)`` on what ``source`` resolves to (``resolve``); for a hub id the
    errors of the checks name the id, and the model records ``checkpoint_hub``."""
    from zhyper.pretrained import load_checkpoint

    folder, hub = resolve(source, revision, cache_dir, token)
    if hub is None:
        return load_checkpoint(cls, folder, **kwargs)
    try:
        model = load_checkpoint(cls, folder, **kwargs)
    except (ValueError, FileNotFoundError) as err:
        if type(err) not in (ValueError, FileNotFoundError):
            raise
        raise type(err)(f"{_where(hub['repo_id'], revision)}, commit {hub['commit']}: {err}") from err
    model.checkpoint_hub = hub
    return model


def refuse_offline(repo_id: str, action: str = "push_to_hub") -> None:
    """A ConnectionError at once when huggingface_hub is offline (``HF_HUB_OFFLINE``): nothing can be uploaded."""
    if _offline():
        raise ConnectionError(f"{action}({repo_id!r}): the hub is offline here (HF_HUB_OFFLINE=1), so nothing was "
                              "uploaded; unset HF_HUB_OFFLINE where the hub is reachable, or upload the folder "
                              f"that save_pretrained writes later (`hf upload {repo_id} DIR`)")


def stage(model, folder: str | os.PathLike, repo_id: str, license: str | None = None) -> Path:
    """What ``push`` uploads: ``save_pretrained`` into ``folder`` (a card whose loading example names ``repo_id``)."""
    from zhyper.pretrained import save_checkpoint

    return save_checkpoint(model, folder, license=license, repo_id=repo_id)


def push(model, repo_id: str, *, private: bool | None = None, token=None, revision: str | None = None,
         commit_message: str | None = None, license: str | None = None, create_pr: bool = False):
    """Upload ``model`` to the hub repository ``repo_id`` (created if needed); returns the hub's CommitInfo."""
    from zhyper.card import check_license

    check_repo_id(repo_id, "push_to_hub")
    check_license(license)
    refuse_offline(repo_id)
    with tempfile.TemporaryDirectory(prefix="zhyper-push-") as tmp:
        folder = stage(model, Path(tmp) / "checkpoint", repo_id, license)
        return push_folder(folder, repo_id, private=private, token=token, revision=revision,
                           commit_message=commit_message or "Upload zhyper checkpoint", create_pr=create_pr)


def push_folder(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, token=None,
                revision: str | None = None, commit_message: str | None = None, create_pr: bool = False):
    """Upload a checkpoint folder (e.g. a run's ``final/``, with its contexts and the card with its evaluation):
    only its checkpoint files, after checking it is a complete, unchanged zhyper checkpoint."""
    from huggingface_hub import HfApi

    from zhyper import __version__
    from zhyper.checksums import verify_files
    from zhyper.pretrained import CONFIG_FILE, check_weights_file, read_config

    check_repo_id(repo_id, "push_to_hub")
    folder = Path(folder)
    record = read_config(folder)
    check_weights_file(folder, record)
    verify_files(folder, record.get("files"), folder / CONFIG_FILE, verify=True)
    refuse_offline(repo_id)
    api = HfApi(token=token, library_name="zhyper", library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=checkpoint_files(),
                             revision=revision, commit_message=commit_message or "Upload zhyper checkpoint",
                             create_pr=create_pr)
