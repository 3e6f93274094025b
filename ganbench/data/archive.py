"""Reading and decoding an image folder or archive (.zip, .tar, .tar.gz/.tgz, ...) into a uint8 array.

This module imports no torch: decode workers are forked processes that only need PIL and numpy.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import tarfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ganbench.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_CHUNK = 512  # images per decode task: large enough to amortise pickling, small enough to balance


class NoImagesError(DataError):
    """The source holds no image matching the split filter; ``folders``: the splits it offers instead
    (split_folders), set when a split was asked for."""

    def __init__(self, message: str, folders: list[str] | None = None):
        super().__init__(message)
        self.folders = folders


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".zip") or name.endswith(TAR_SUFFIXES)


def _parts(member: str) -> list[str]:
    """The path components of an archive member, without ``.`` and empty ones: ``tar -C dir .`` names every
    member ``./train/a.png``, and that leading ``.`` is the current directory, not a hidden folder."""
    return [p for p in member.replace("\\", "/").split("/") if p not in ("", ".")] or [""]


def wanted(member: str, split: str | None) -> bool:
    """True for an image file whose directory components include ``split`` (any depth), skipping
    hidden files and macOS resource forks."""
    parts = _parts(member)
    if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
        return False
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return split is None or split in parts[:-1]


def member_names(path: Path) -> Iterator[str]:
    """Names of the files in a directory or archive (relative, '/'-separated), without reading them."""
    if path.is_dir():
        for dirpath, _, filenames in os.walk(path):
            for fname in filenames:
                yield os.path.relpath(os.path.join(dirpath, fname), path).replace(os.sep, "/")
    elif path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            yield from (info.filename for info in zf.infolist() if not info.is_dir())
    elif path.name.lower().endswith(TAR_SUFFIXES):
        with tarfile.open(path, mode="r|*") as tf:
            yield from (member.name for member in tf if member.isfile())


def split_folders(path: Path) -> list[str] | None:
    """The splits a source offers: the top-level folders that hold images, below the folder every image
    shares if there is one (``cifar10/train/...`` and ``cifar10/test/...`` offer train and test); None when
    it holds no image at all."""
    dirs = [_parts(name)[:-1] for name in member_names(path) if wanted(name, None)]
    if not dirs:
        return None
    depth = 0  # components shared by every image's folder
    while all(len(d) > depth for d in dirs) and len({d[depth] for d in dirs}) == 1:
        depth += 1
    return sorted({d[depth] for d in dirs if len(d) > depth})


def iter_images(path: Path, split: str | None) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, encoded bytes) of every wanted image in a directory or archive, without
    extracting anything to disk. Order is the source's; callers sort by name."""
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for fname in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, fname), path).replace(os.sep, "/")
                if wanted(rel, split):
                    with open(os.path.join(dirpath, fname), "rb") as f:
                        yield rel, f.read()
    elif path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and wanted(info.filename, split):
                    yield info.filename, zf.read(info)
    elif path.name.lower().endswith(TAR_SUFFIXES):
        # "r|*": pure streaming read (any compression), one pass over the file.
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                if member.isfile() and wanted(member.name, split):
                    yield member.name, tf.extractfile(member).read()
    else:
        raise DataError(f"dataset.path={path} is neither a directory nor a .zip/.tar/.tar.gz/.tgz archive")


def decode_image(data: bytes, resolution: int, channels: int) -> np.ndarray:
    """Encoded bytes -> (resolution, resolution, channels) uint8: converted to RGB (or L), shorter side
    resized to ``resolution`` with PIL bicubic (antialiased when shrinking), then center-cropped."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    if min(w, h) != resolution:
        scale = resolution / min(w, h)
        w, h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
    if (w, h) != (resolution, resolution):
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def decode_chunk(names: list[str], blobs: list[bytes], resolution: int, channels: int):
    """Decode a list of images into one (n, H, W, C) uint8 array; a bad image raises DataError."""
    out = np.empty((len(blobs), resolution, resolution, channels), dtype=np.uint8)
    for i, (name, blob) in enumerate(zip(names, blobs)):
        try:
            out[i] = decode_image(blob, resolution, channels)
        except UnidentifiedImageError:
            raise DataError(f"cannot decode image {name!r}: not a recognised image format") from None
        except (OSError, ValueError) as e:
            raise DataError(f"cannot decode image {name!r}: {e}") from None
    return names, out


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode_source(path: Path, split: str | None, resolution: int, channels: int,
                  workers: int | None = None) -> tuple[list[str], np.ndarray]:
    """All wanted images of ``path`` decoded to (N, H, W, C) uint8, sorted by member name.

    Decoding runs in ``workers`` forked processes (PIL holds the GIL while decoding small images,
    so threads do not help) while the main process streams the source; serial if workers <= 1 or
    fork is unavailable."""
    workers = default_workers() if workers is None else int(workers)
    use_pool = workers > 1 and "fork" in multiprocessing.get_all_start_methods()
    results: list = []
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) if use_pool else None
    try:
        names: list[str] = []
        blobs: list[bytes] = []

        def flush():
            if not names:
                return
            if pool is None:
                results.append(decode_chunk(list(names), list(blobs), resolution, channels))
            else:
                results.append(pool.submit(decode_chunk, list(names), list(blobs), resolution, channels))
            names.clear()
            blobs.clear()

        try:
            for name, blob in iter_images(path, split):
                names.append(name)
                blobs.append(blob)
                if len(names) >= _CHUNK:
                    flush()
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
        flush()
        if pool is not None:
            results = [f.result() for f in results]
    except DataError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{e} (in {path})") from None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    all_names = [n for chunk_names, _ in results for n in chunk_names]
    if not all_names:
        if not split:
            raise NoImagesError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {path}")
        folders = split_folders(path)
        found = (f"its splits (top-level folders with images): {', '.join(folders)}" if folders else
                 "it has no image sub-folders" if folders is not None else
                 f"it holds no images ({', '.join(IMAGE_EXTENSIONS)}) at all")
        raise NoImagesError(f"no images under a '{split}' sub-folder of {path}; {found}", folders)
    arrays = np.concatenate([arr for _, arr in results])
    order = sorted(range(len(all_names)), key=all_names.__getitem__)
    return [all_names[i] for i in order], arrays[np.asarray(order)]
