"""A Hugging Face hub cache populated on disk the way huggingface_hub stores a download, with its own helpers.

``cache_repo(cache, "org/name", folder)`` lays ``folder``'s files out as ``snapshot_download`` leaves
them: ``models--org--name/blobs/<git sha1, or sha256 for LFS files>``, ``snapshots/<commit>/<file>``
as relative symlinks into ``blobs/`` (``file_download._create_symlink``), ``refs/<revision>`` holding the
commit (``_cache_commit_hash_for_specific_revision``) and the commit's tree listing
(``trees/<commit>.json``, ``_tree_cache.write_tree_cache``), which the offline ``snapshot_download``
reads to tell a complete snapshot from a partial one. ``scan_cache_dir`` (huggingface_hub's cache
scanner) must then see the repository, its revision and its files: the tests check that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")  # stored as LFS objects on the hub: blobs named by their sha256


def commit_of(*parts: str) -> str:
    """A 40-hex commit id (a hub commit's form), derived from ``parts``."""
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def cache_repo(cache: Path, repo_id: str, folder: Path, revision: str = "main", commit: str | None = None,
               files: list[str] | None = None) -> Path:
    """Put ``folder``'s files (or ``files`` of it) into the hub cache ``cache`` as commit ``commit`` of ``repo_id``,
    reachable by ``revision`` (a branch or tag); returns the snapshot folder. ``files``: only these go into the
    snapshot (a partial download), while every file of ``folder`` is in the commit's tree listing."""
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    from huggingface_hub.file_download import (_cache_commit_hash_for_specific_revision, _create_symlink,
                                               repo_folder_name)
    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    storage = Path(cache) / repo_folder_name(repo_id=repo_id, repo_type="model")
    commit = commit or commit_of(repo_id, revision, str(folder))
    snapshot = storage / "snapshots" / commit
    entries = {}
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        data = path.read_bytes()
        blob_id = git_hash(data)
        lfs = path.suffix in LFS_SUFFIXES
        with open(path, "rb") as f:
            sha256 = sha_fileobj(f).hex() if lfs else None
        entries[path.name] = TreeCacheEntry(size=len(data), blob_id=blob_id, lfs_sha256=sha256,
                                            lfs_size=len(data) if lfs else None)
        if files is not None and path.name not in files:
            continue
        blob = storage / "blobs" / (sha256 or blob_id)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        snapshot.mkdir(parents=True, exist_ok=True)
        _create_symlink(str(blob), str(snapshot / path.name), new_blob=True)
    _cache_commit_hash_for_specific_revision(str(storage), revision, commit)
    write_tree_cache(str(storage), commit, entries)
    return snapshot


def blob_of(snapshot: Path, name: str) -> Path:
    """The blob a snapshot's file links to (where the bytes are)."""
    link = snapshot / name
    assert link.is_symlink(), f"{link} should be a symlink into blobs/, as huggingface_hub makes it"
    return (link.parent / os.readlink(link)).resolve()
