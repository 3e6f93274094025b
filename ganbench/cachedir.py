"""The user's ganbench cache, ``${GANBENCH_CACHE:-~/.cache/ganbench}``, and its private folders.

A folder whose files ganbench executes (the GMM lab's C library, Inductor's compiled kernels and pickled graphs)
must be writable by the user alone: anyone who can write there can run code as the user. ``private_dir`` is such
a folder: created with mode 0700; an existing one owned by the user but writable by group or others is emptied and
recreated 0700 (its files may have been planted); one that is not the user's own folder (another owner, a
symbolic link, a file) is refused in one line, since it cannot be fixed without deleting someone else's files.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

from ganbench.errors import GanbenchError

log = logging.getLogger("ganbench")


def root() -> Path:
    """``$GANBENCH_CACHE``, else ``~/.cache/ganbench`` (the metrics' default cache_dir lives below it too)."""
    return Path(os.path.expanduser(os.environ.get("GANBENCH_CACHE") or "~/.cache/ganbench")).absolute()


def not_private(path: Path) -> str | None:
    """Why ``path`` is no private folder of this user (None when it is one): not a real directory, another
    owner, or writable by group or others."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "is not a directory (a symbolic link or a file)"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {st.st_mode & 0o777:o})"
    return None


def private_dir(name: str) -> Path:
    """``root()/name``, a directory only this user can write (mode 0700), created if missing.

    Raises GanbenchError naming the folder when it exists and is not the user's own directory."""
    path = root() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    why = not_private(path)
    if why is not None and "writable by" in why:
        # The user's folder, but others could have put files in it: start from an empty one.
        log.warning("cache folder %s %s; its contents could come from other users: recreated empty, mode 700",
                    path, why)
        shutil.rmtree(path)
        os.mkdir(path, 0o700)
        why = not_private(path)
    if why is not None:
        raise GanbenchError(f"cache folder {path} {why}: ganbench runs code it finds there, so it must be a folder "
                            f"only you can write; remove it, or set GANBENCH_CACHE to another folder")
    return path
