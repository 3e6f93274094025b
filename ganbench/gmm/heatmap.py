"""The paper's §5 heatmap experiment (Figure 3): success probability over a grid of generator starts.

For every start μ̂⁽⁰⁾ on a grid over [−1, 1]² and every one of ``inits`` random discriminators, run a
method for ``iterations`` steps; a run succeeds when d_TV(G_μ*, G_μ̂) < success_tv at the end.
All grid points × initialisations advance together as one batch per method.
"""
import csv
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from . import native
from .config import GMMConfig
from .dynamics import State
from ..errors import ConfigError
from .model import total_variation
from .simulate import can_compile, simulate

log = logging.getLogger("ganbench.gmm")

OUTCOMES = ("success", "mode_collapse", "disc_collapse", "vanishing_grad")
TV_CHUNK = 8192


def grid_axis(spec: GMMConfig) -> Tensor:
    """The grid's coordinates along one axis (float64, CPU)."""
    low, high = spec.grid_range
    return torch.linspace(low, high, spec.grid, dtype=torch.float64)


def grid_starts(axis: Tensor) -> Tensor:
    """μ̂⁽⁰⁾ for every grid point -> (2, G²), row-major: point k = (axis[k // G], axis[k % G])."""
    mu1, mu2 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([mu1.flatten(), mu2.flatten()])


def random_discriminators(count: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """(ℓ₁, r₁, ℓ₂, r₂) = four i.i.d. Uniform[low, high] endpoints, sorted -> (4, count) float64."""
    ends = torch.rand(4, count, generator=generator, dtype=torch.float64)
    return (low + (high - low) * ends).sort(0).values


@dataclass
class MethodResult:
    outcomes: Dict[str, Tensor]   # each (G², inits) bool, or None where it does not apply
    tv: Tensor                    # (G², inits) final d_TV
    seconds: float
    compiled: bool
    backend: str = "torch"        # "native" (the C loop of native.py) or "torch" (tensor programs)


def classify(final: State, direction: Tensor, target: Tensor, spec: GMMConfig, method: str) -> Dict[str, Tensor]:
    """Per run (float64): success, mode collapse, discriminator collapse, vanishing gradient; and final TV.

    - mode collapse: |μ̂₁ − μ̂₂| < mode_collapse_tol (the two components became one);
    - success: TV < success_tv, and not mode-collapsed when ``collapsed_is_failure`` (at μ* = (−0.5, 0.5)
      the best single Gaussian, μ̂ = (0, 0), is at TV 0.058 < 0.1: TV alone would call it converged, while
      the paper counts the diagonal as failure, Figure 3 and §5);
    - discriminator collapse: at least one interval collapsed to zero width (not for ``optimal``);
    - vanishing gradient: the generator's last update direction has norm < vanishing_grad_tol, unsuccessful.
    """
    mu = final.mu.to(torch.float64)
    # Per run, so chunks give the same values; the root finder's temporaries (17 points x 4 terms x runs) then
    # stay in cache: 52,920 runs measured 4.4 s in chunks of 8192 against 6.8 s at once (load 2.8).
    target64 = target.to(torch.float64)
    tv = torch.cat([total_variation(mu[:, i:i + TV_CHUNK], target64) for i in range(0, mu.shape[1], TV_CHUNK)], 0) \
        if mu.shape[1] else total_variation(mu, target64)
    mode_collapse = (mu[0] - mu[1]).abs() < spec.mode_collapse_tol
    success = tv < spec.success_tv
    if spec.collapsed_is_failure:
        success = success & ~mode_collapse
    vanishing = (direction.to(torch.float64).norm(dim=0) < spec.vanishing_grad_tol) & ~success
    disc_collapse = None if method == "optimal" else ~final.alive.all(0)
    return {"success": success, "mode_collapse": mode_collapse, "disc_collapse": disc_collapse,
            "vanishing_grad": vanishing, "tv": tv}


def choose_backend(requested: str, method: str, device: torch.device, dtype: torch.dtype, unroll_grad: str,
                   target: Tensor) -> str:
    """``gmm.backend`` for one method: "native" where the C loop covers it (CPU; first_order, alternating,
    analytic unrolled) and builds, else "torch". ``native`` fails instead of falling back when it cannot build;
    ``optimal`` (and CUDA, autograd unrolled gradients) always runs as tensors."""
    if requested == "torch" or not native.supported(method, device, dtype, unroll_grad, target):
        return "torch"
    if native.library() is not None:
        return "native"
    if requested == "native":
        raise ConfigError(f"gmm.backend: native requested but {native.unavailable_reason()}; "
                          "allowed: auto (falls back to torch), torch")
    return "torch"


def run_method(method: str, spec: GMMConfig, starts: Tensor, discriminators: Tensor, device: torch.device,
               dtype: torch.dtype, compile_mode: str, threads: Optional[int] = None) -> MethodResult:
    """All grid points × initialisations of one method, as one batch.

    The optimal-discriminator dynamics do not depend on the discriminator's initialisation (it is replaced
    by argmax L before every step), so they run once per grid point and are broadcast over initialisations.
    """
    points, inits = starts.shape[1], discriminators.shape[1]
    if method == "optimal":
        mu = starts
        ends = torch.zeros(4, points, dtype=torch.float64)
    else:
        mu = starts.repeat_interleave(inits, 1)           # run k = point k // inits, init k % inits
        ends = discriminators.repeat(1, points)
    state = State(mu.to(device, dtype), ends.to(device, dtype),
                  torch.ones(2, mu.shape[1], dtype=torch.bool, device=device))
    target = torch.tensor(spec.target_mu, dtype=dtype, device=device)
    runs = mu.shape[1]
    backend = choose_backend(spec.backend, method, device, dtype, spec.unroll_grad, target)
    compiled = backend == "torch" and (compile_mode == "true" or (
        compile_mode == "auto" and runs * spec.iterations >= 2_000_000 and can_compile(device, method, spec.unroll_grad)))
    t0 = time.perf_counter()
    if backend == "native":
        final, direction = native.simulate(method, state, target, spec.lr, spec.iterations, spec.unroll,
                                           threads=threads or torch.get_num_threads())
    else:
        final, direction = simulate(method, state, target, spec.lr, spec.iterations, spec.unroll, spec.unroll_grad,
                                    compiled=compiled, chunk=spec.chunk)
    outcomes = classify(final, direction, target, spec, method)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    reshape = (lambda t: t.cpu().reshape(points, 1).expand(points, inits)) if method == "optimal" else \
        (lambda t: t.cpu().reshape(points, inits))
    tv = reshape(outcomes.pop("tv"))
    outcomes = {k: None if v is None else reshape(v) for k, v in outcomes.items()}
    log.info("%s: %d runs x %d iterations in %.1fs%s", method, runs, spec.iterations, seconds,
             " (compiled)" if compiled else " (native C loop)" if backend == "native" else "")
    return MethodResult(outcomes, tv, seconds, compiled, backend)


def run_methods(spec: GMMConfig, starts: Tensor, discriminators: Tensor, device: torch.device,
                dtype: torch.dtype) -> Dict[str, MethodResult]:
    """``run_method`` for every method of ``spec.methods`` (in that order in the result).

    Methods on the C loop run one after another in a worker thread while the tensor methods (``optimal``: 441
    small runs, one torch thread) run in this one: the C loop releases the GIL, so the two overlap on two cores
    instead of leaving one idle. Results do not depend on the overlap; the per-method seconds then overlap too.
    """
    target = torch.tensor(spec.target_mu, dtype=dtype, device=device)
    on_c = [m for m in spec.methods
            if choose_backend(spec.backend, m, device, dtype, spec.unroll_grad, target) == "native"]
    results: Dict[str, MethodResult] = {}
    worker = None
    if on_c and len(on_c) < len(spec.methods):
        threads = torch.get_num_threads()   # read now: a small tensor batch drops torch to one thread meanwhile

        def native_methods() -> Dict[str, MethodResult]:
            return {m: run_method(m, spec, starts, discriminators, device, dtype, spec.compile, threads)
                    for m in on_c}

        worker = ThreadPoolExecutor(1)
        pending = worker.submit(native_methods)
        try:
            for m in spec.methods:
                if m not in on_c:
                    results[m] = run_method(m, spec, starts, discriminators, device, dtype, spec.compile)
            results.update(pending.result())
        finally:
            worker.shutdown(wait=True)
    else:
        for m in spec.methods:
            results[m] = run_method(m, spec, starts, discriminators, device, dtype, spec.compile)
    return {m: results[m] for m in spec.methods}


def off_diagonal(axis: Tensor) -> Tensor:
    """(G²,) mask of grid points with μ̂₁ ≠ μ̂₂ (the paper excludes the mode-collapsed start μ̂₁ = μ̂₂)."""
    starts = grid_starts(axis)
    return (starts[0] - starts[1]).abs() > 1e-9


def summary(result: MethodResult, mask: Tensor) -> Dict[str, Optional[float]]:
    """Fractions of off-diagonal runs per outcome, and their mean final TV."""
    out = {name: None if value is None else float(value[mask].double().mean())
           for name, value in result.outcomes.items()}
    out["final_tv"] = float(result.tv[mask].mean())
    return out


def write_csv(path: Path, axis: Tensor, results: Dict[str, MethodResult]) -> None:
    """One row per grid point: the start, then per method the fraction of runs per outcome and mean TV."""
    starts = grid_starts(axis)
    header = ["mu1_init", "mu2_init"]
    for method in results:
        header += [f"{method}_{o}" for o in OUTCOMES] + [f"{method}_mean_tv"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for k in range(starts.shape[1]):
            row: List[object] = [f"{float(starts[0, k]):.6g}", f"{float(starts[1, k]):.6g}"]
            for result in results.values():
                for o in OUTCOMES:
                    value = result.outcomes[o]
                    row.append("" if value is None else f"{float(value[k].double().mean()):.6g}")
                row.append(f"{float(result.tv[k].mean()):.6g}")
            writer.writerow(row)


def success_grid(result: MethodResult, grid: int) -> Tensor:
    """(G, G) success probability, [i, j] = start (axis[i], axis[j])."""
    return result.outcomes["success"].double().mean(1).reshape(grid, grid)
