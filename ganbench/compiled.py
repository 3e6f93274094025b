"""``train.compile``: the D and G steps' objectives compiled with ``torch.compile``, gradient penalties included.

``torch.autograd.grad(..., create_graph=True)`` cannot be traced by torch.compile ("does not support double
backward"), so under compilation the penalties take their input gradient with ``torch.func.vjp``
(ganbench/penalties/base.py ``input_grad``): the same maths as one graph, whose backward AOTAutograd compiles
with the forward. Random draws inside the compiled region (penalty noise, instance noise) use eager's
generator (``torch._inductor.config.fallback_random``), so a compiled run draws the same numbers as an eager
one, its checkpoint's RNG state resumes exactly, and its results equal eager's to float rounding.

Compilation happens on the first step and takes tens of seconds on a CPU (it is logged with its duration),
so it pays only for long runs; it is off by default. The optimizer steps stay eager.
"""
import logging
import time
from typing import Any, Callable

import torch

log = logging.getLogger("ganbench")


def compiled(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``fn`` compiled (static shapes: a run's batch never changes), logging when its first call, which
    compiles it, starts and how long it took."""
    import torch._inductor.config as inductor

    inductor.fallback_random = True
    program = torch.compile(fn, dynamic=False)
    first = [True]

    def call(*args: Any) -> Any:
        if not first[0]:
            return program(*args)
        first[0] = False
        log.info("train.compile: compiling the %s (first call; tens of seconds on a CPU)", what)
        t = time.perf_counter()
        out = program(*args)
        log.info("train.compile: %s compiled in %.1f s", what, time.perf_counter() - t)
        return out

    return call
