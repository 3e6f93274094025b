"""Advance a batch of independent GMM-GAN runs for many iterations, fast.

The batch is cut into chunks of a few thousand runs that each advance through all iterations before the
next starts: a chunk's state and temporaries stay in cache. Every chunk is one vectorised tensor program
(not a loop over runs). With ``compiled`` the step is fused by torch.compile into one kernel per chunk;
chunks are padded to one shape so that it compiles once.
"""
import logging
import shutil
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .dynamics import State, step, step_parts

log = logging.getLogger("ganbench.gmm")

# Inductor's defaults split a long chain of pointwise ops into several loops that re-read and re-compute
# their inputs; the unrolled step (K discriminator steps with their derivatives) is such a chain. Lifting
# the limits measured 1.6x faster per unrolled step (K=5, 52,920 runs, 1 thread).
FUSION = {"max_fusion_size": 4096, "realize_opcount_threshold": 100000, "realize_reads_threshold": 100000}

# Below this many runs a step's ops are small: on CPU, threads spend more time synchronising than computing
# (the optimal dynamics' 441 runs measured 22 s with 2 threads on a busy 2-core machine, 133 s in a bad case).
SMALL_BATCH = 4096


def _plain_step(method: str, target: Tensor, lr: float, unroll: int, unroll_grad: str):
    """The step on unstacked components: the compiled version is then one loop over runs, computing each
    value once (stacking inside it would split the work into loops that recompute their inputs)."""
    def one(mu: Tensor, ends: Tensor, alive: Tensor):
        m, e, a = step_parts(method, list(mu.unbind(0)), list(ends.unbind(0)), list(alive.unbind(0)), target, lr,
                             unroll, unroll_grad)
        return (*m, *e, *a)
    return one


def _stack(parts) -> Tuple[Tensor, Tensor, Tensor]:
    return torch.stack(parts[:2]), torch.stack(parts[2:6]), torch.stack(parts[6:])


def can_compile(device: torch.device, method: str, unroll_grad: str) -> bool:
    """torch.compile needs a C++ compiler on CPU; the autograd paths of the unrolled gradient stay eager."""
    if method == "unrolled" and unroll_grad != "analytic":
        return False
    return device.type == "cuda" or shutil.which("g++") is not None or shutil.which("c++") is not None


class Stepper:
    """One step of ``method`` for a chunk, compiled on first use when asked (falls back to eager)."""

    _cache: Dict[tuple, "Stepper"] = {}

    def __init__(self, method: str, target: Tensor, lr: float, unroll: int, unroll_grad: str, compiled: bool):
        self.eager = _plain_step(method, target, lr, unroll, unroll_grad)
        self.compiled = None
        if compiled:
            from ..compiled import OPTIONS, inductor_cache

            inductor_cache("gmm.compile")  # Inductor's caches run code when read: a folder only the user can write
            self.compiled = torch.compile(self.eager, dynamic=False, options=OPTIONS)

    @classmethod
    def get(cls, method: str, target: Tensor, lr: float, unroll: int, unroll_grad: str, compiled: bool):
        key = (method, tuple(target.tolist()), target.dtype, str(target.device), lr, unroll, unroll_grad, compiled)
        if key not in cls._cache:
            cls._cache[key] = cls(method, target, lr, unroll, unroll_grad, compiled)
        return cls._cache[key]

    def __call__(self, mu: Tensor, ends: Tensor, alive: Tensor):
        if self.compiled is not None:
            try:
                return _stack(self.compiled(mu, ends, alive))
            except Exception as ex:  # no working compiler / backend: the eager step computes the same
                log.warning("torch.compile failed (%s); continuing without compiling", str(ex).splitlines()[0])
                self.compiled = None
        return _stack(self.eager(mu, ends, alive))


def simulate(method: str, state: State, target: Tensor, lr: float, iterations: int, unroll: int = 5,
             unroll_grad: str = "analytic", compiled: bool = False, chunk: Optional[int] = None):
    """Run ``iterations`` steps of ``method`` on every run of ``state`` (batch shape (B,)).

    Returns the final state and the generator's last update direction (μ_{T−1} − μ_T)/η, i.e. the
    gradient the generator followed at its last step (its norm measures vanishing gradients).
    """
    stepper = Stepper.get(method, target, lr, unroll, unroll_grad, compiled)
    if state.mu.shape[1] < SMALL_BATCH and state.mu.device.type == "cpu" and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return simulate(method, state, target, lr, iterations, unroll, unroll_grad, compiled, chunk)
        finally:
            torch.set_num_threads(threads)
    if compiled:
        # Once around the loop: entering the patch costs more than a small chunk's step.
        with torch._inductor.config.patch(FUSION):
            return _simulate(stepper, state, lr, iterations, chunk)
    return _simulate(stepper, state, lr, iterations, chunk)


def _simulate(stepper: Stepper, state: State, lr: float, iterations: int, chunk: Optional[int]):
    total = state.mu.shape[1]
    chunk = min(chunk or total, total)
    finals, directions = [], []
    for start in range(0, total, chunk):
        parts = [t[:, start:start + chunk] for t in (state.mu, state.ends, state.alive)]
        size = parts[0].shape[1]
        if size < chunk:  # pad with copies of the first run: one shape, one compilation
            parts = [torch.cat([p, p[:, :1].expand(-1, chunk - size)], 1) for p in parts]
        mu, ends, alive = (p.contiguous() for p in parts)
        previous = mu
        for _ in range(iterations):
            previous = mu
            mu, ends, alive = stepper(mu, ends, alive)
        finals.append((mu[:, :size], ends[:, :size], alive[:, :size]))
        directions.append(((previous - mu) / lr)[:, :size])
    mu, ends, alive = (torch.cat(parts, 1) for parts in zip(*finals))
    return State(mu, ends, alive), torch.cat(directions, 1)


def record(method: str, state: State, target: Tensor, lr: float, iterations: int, unroll: int = 5,
           unroll_grad: str = "analytic") -> Dict[str, Tensor]:
    """Every step of a (small) batch, eager: mu (T+1, 2, *batch), ends (T+1, 4, *batch), alive (T+1, 2, ...)."""
    history = {"mu": [state.mu], "ends": [state.ends], "alive": [state.alive]}
    for _ in range(iterations):
        state = step(method, state, target, lr, unroll, unroll_grad)
        history["mu"].append(state.mu)
        history["ends"].append(state.ends)
        history["alive"].append(state.alive)
    return {k: torch.stack(v) for k, v in history.items()}
