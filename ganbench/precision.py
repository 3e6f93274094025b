"""``train.precision``: the dtype of a game step's computations (torch.autocast) and fp16's loss scaling.

fp32 (default) changes nothing. bf16 and fp16 run the step under ``torch.autocast``: matrix products and
convolutions in the low precision, reductions and losses in fp32 (autocast's own op lists), parameters and
optimizer states in fp32. fp16's narrow range needs loss scaling: each player's backward is scaled by a
``torch.amp.GradScaler`` of its own (D's updated after every D step, G's after every G step), whose state goes
into the checkpoint. Gradient penalties: bf16 has fp32's exponent range, so a penalty's double backward runs
under autocast like the rest; under fp16 the penalty (its D forward and input gradient) runs in fp32, where the
squared gradient norm cannot overflow (our choice; ‖∇ₓD‖² of a sharp D exceeds fp16's 65,504).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Dict, Optional

import torch

PRECISIONS: Dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context of a step's computations: autocast to the precision's dtype, or nothing for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """fp32 inside an autocast region (the fp16 penalty)."""
    return torch.autocast(device.type, enabled=False)


def under(precision: str, device: torch.device, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run under ``autocast(precision, device)``."""
    if PRECISIONS[precision] is None:
        return fn

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with autocast(precision, device):
            return fn(*args, **kwargs)

    return wrapped


def scalers(precision: str, device: torch.device) -> Optional[Dict[str, torch.amp.GradScaler]]:
    """fp16: a loss scaler per player (D, G); None otherwise."""
    if precision != "fp16":
        return None
    return {"D": torch.amp.GradScaler(device.type), "G": torch.amp.GradScaler(device.type)}
