"""On-disk cache of the real-data features that the image metrics compare against.

The real split is pushed through the extractor once; its pool features (for KID, precision/recall,
density/coverage), their FID statistics and, when the extractor has them, the logits are stored in one
``.npz`` under a key built from the dataset, split, resolution, sample count, extractor and weights, plus a
digest of the pixels (so a changed image folder never reuses stale statistics). Files are written to a
temporary name and renamed, so concurrent runs of a sweep never read a half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def pixels_digest(images: torch.Tensor) -> str:
    """sha1 of a uint8 tensor's bytes (first 12 hex digits): identifies the exact reference images."""
    arr = images.contiguous().numpy()
    return hashlib.sha1(arr.view(np.uint8).reshape(-1).data).hexdigest()[:12]


def reference_key(dataset_name: str, split: str, images: torch.Tensor, extractor_name: str,
                  weights_hash: str) -> str:
    """``<dataset>-<split>-<C>x<H>x<W>-n<N>-<extractor>-w<weights hash>-px<pixel digest>``, filesystem-safe."""
    n, c, h, w = images.shape
    key = (f"{dataset_name}-{split}-{c}x{h}x{w}-n{n}-{extractor_name}-w{weights_hash[:12]}"
           f"-px{pixels_digest(images)}")
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", key)


def load(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - a corrupt cache file is recomputed, not fatal
        log.warning("ignoring unreadable reference statistics %s (%s)", path, err)
        return None


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to ``path`` atomically: temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
