"""On-disk cache of decoded datasets: ``<root>/cache/<label>-<key>.pt`` holding uint8 tensors.

The key hashes everything the decoded tensor depends on (source identity, split, resolution,
channels, format version), so changing any of them builds a new file instead of reusing a stale one.
Files are written atomically (temp file + os.replace) so concurrent runs never read a partial file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from ganbench.errors import one_line_error

log = logging.getLogger(__name__)

# Bump when the decoding changes (resize filter, crop rule, ...) so old caches are not reused.
CACHE_VERSION = 1


def cache_key(parts: dict) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of ``parts`` (plus the format version)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(root: Path, label: str, parts: dict) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_")[:80]
    return Path(root) / "cache" / f"{safe}-{cache_key(parts)}.pt"


def file_identity(path: Path) -> dict:
    """Absolute path, size and mtime of a file; for a directory, a hash over those of all its files."""
    path = Path(path).resolve()
    if path.is_dir():
        h = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for fname in sorted(filenames):
                st = os.stat(os.path.join(dirpath, fname))
                rel = os.path.relpath(os.path.join(dirpath, fname), path)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"path": str(path), "listing": h.hexdigest()}
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_or_build(path: Path | None, build: Callable[[], dict], what: str) -> dict:
    """Load the dict of tensors cached at ``path``, or call ``build()`` and cache its result.

    ``path=None`` disables the cache. A cache that cannot be read is rebuilt; one that cannot be
    written is only logged, since the data itself is fine."""
    if path is not None and path.is_file():
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's pickle-protocol notes: the warning below says it all
                obj = torch.load(path, map_location="cpu", weights_only=True)
            log.info("loaded %s from cache %s in %.2fs", what, path, time.perf_counter() - t0)
            return obj
        except Exception as e:  # truncated/corrupt file from an older crash or another version
            # one_line_error drops torch's advice to retry with weights_only=False: a cache file that holds
            # more than tensors is not ours (it would run code if unpickled), so it is rebuilt, never trusted.
            log.warning("ignoring unreadable cache %s (%s); rebuilding", path, one_line_error(e))
    t0 = time.perf_counter()
    obj = build()
    log.info("decoded %s in %.1fs", what, time.perf_counter() - t0)
    if path is not None:
        try:
            save_atomic(obj, path)
            log.info("cached %s at %s", what, path)
        except OSError as e:
            log.warning("could not write cache %s (%s); continuing without it", path, e)
    return obj
