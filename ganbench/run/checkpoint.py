"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked against the run's config."""
import os
import random
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np
import torch

from ..errors import CheckpointError

# Config keys that define what is being trained: a checkpoint written under other values would not
# continue the same run. Cadences, iterations (to train longer), evaluation and device may change.
IDENTITY_KEYS = ("seed", "dataset", "arch", "objective", "penalty", "optimizer", "dynamics", "train.batch_size",
                 "train.g_average", "train.ema_beta", "pack", "augment")


#: The checkpoint layout this ganbench writes and reads. A file without the key is format 1 (written before it
#: existed). Raise it when a change makes older ganbench versions misread new checkpoints.
FORMAT = 1


def check_format(state: Dict[str, Any], path: Path, error: type = CheckpointError) -> None:
    """Refuse a checkpoint written by a newer ganbench, whose layout this one may misread."""
    written = state.get("format", 1)
    if not isinstance(written, int) or written > FORMAT:
        raise error(f"checkpoint {path} was written by a newer ganbench (checkpoint format {written!r}; this one "
                    f"reads format {FORMAT} and older): upgrade ganbench to use it")


def previous_path(path: Path) -> Path:
    """Where ``save(..., keep_previous=True)`` keeps the checkpoint it replaced: ``last.pt`` -> ``prev.pt``."""
    return path.with_name("prev.pt")


def save(state: Dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one, never a torn one.

    ``keep_previous``: the file it replaces stays as ``previous_path(path)``. A replicated job writes its
    seeds' checkpoints one after another; a kill between two writes leaves some seeds one checkpoint ahead,
    and their previous checkpoints let the job resume every seed at the common step.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    from .rundir import guarded_write

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {**state, "format": FORMAT}
    guarded_write(tmp, lambda f: torch.save(state, f))
    if keep_previous and path.exists():
        prev = previous_path(path)
        prev_tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
        try:  # a hard link: ``path`` exists at every instant, so a kill here loses nothing
            if prev_tmp.exists():
                prev_tmp.unlink()
            os.link(path, prev_tmp)
            os.replace(prev_tmp, prev)
        except OSError:  # a file system without hard links: a kill in the gap leaves only prev.pt, which resume reads
            os.replace(path, prev)
    os.replace(tmp, path)


def load(path: Path) -> Dict[str, Any]:
    """Load a checkpoint (tensors and plain containers only); a corrupt file becomes a CheckpointError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes: the error line says it all
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as ex:  # noqa: BLE001 - any unpickling failure means the file is unusable
        reason = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({reason}); it was left in place: move it away to start afresh"
        ) from None
    if not isinstance(state, dict) or "step" not in state or "G" not in state:
        raise CheckpointError(f"{path} is not a ganbench checkpoint; it was left in place")
    check_format(state, path)
    return state


_MISSING = object()


def _get(tree: Dict[str, Any], dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _first_difference(a: Any, b: Any, prefix: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        # A group's name first: a checkpoint of another dataset is named as such, not by a derived key; then
        # the node's own values before its sub-nodes, so that a shared key (arch.width) is named rather than
        # the side that reads it (arch.g.width). Keys the checkpoint lacks were added to ganbench after it was
        # written: not a difference.
        for key in sorted(set(a), key=lambda k: (k != "name", isinstance(a.get(k), dict), k)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}")
            if found:
                return found
        return ""
    return "" if a == b else f"{prefix}: {a!r} in the checkpoint, {b!r} now"


def check_matches(saved: Dict[str, Any], current: Dict[str, Any], path: Path, keys: Iterable[str] = IDENTITY_KEYS) -> None:
    """Raise CheckpointError naming the first identity key whose value differs."""
    for key in keys:
        if _get(saved, key, _MISSING) is _MISSING and _get(current, key) is not None:
            continue  # a group added to ganbench after the checkpoint was written (e.g. dynamics)
        diff = _first_difference(_get(saved, key), _get(current, key), key)
        if diff:
            raise CheckpointError(
                f"checkpoint {path} belongs to a different run ({diff}); it was left in place: "
                "use another run directory (different overrides) or move the checkpoint away"
            )


def rng_state() -> Dict[str, Any]:
    """Every RNG the run draws from (torch CPU and CUDA, Python, NumPy), as checkpoint-safe values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x
