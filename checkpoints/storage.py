"""The checkpoint storage (Django's storage API) and the few folder operations it lacks."""

from __future__ import annotations

import re

from django.core.files.storage import Storage, storages

# \Z, not $: $ also matches before a trailing newline.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\Z")


def checkpoint_storage() -> Storage:
    return storages["checkpoints"]


def delete_tree(storage: Storage, path: str) -> None:
    """Remove a folder and everything in it (the storage API deletes one name at a time)."""
    if not storage.exists(path):
        return
    folders, files = storage.listdir(path)
    for name in files:
        storage.delete(f"{path}/{name}")
    for name in folders:
        delete_tree(storage, f"{path}/{name}")
    try:
        storage.delete(path)  # the now empty folder (FileSystemStorage removes it; object stores have none)
    except OSError:
        pass
