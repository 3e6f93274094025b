"""Benchmarks of the GMM-GAN lab (ganbench/gmm).

  python scripts/bench_gmm.py heatmap [overrides ...]   # the full experiment in-process; seconds per method
  python scripts/bench_gmm.py unroll-grad [--runs N]    # d/dμ L(μ, D_K(μ)): analytic vs torch.func.jvp vs autograd
  python scripts/bench_gmm.py dtype [--runs N]          # float64 vs float32: step time and outcome agreement
  python scripts/bench_gmm.py compile [--runs N]        # eager vs torch.compile per step, per method
  python scripts/bench_gmm.py native [--runs N]         # the C loop (gmm.backend=native) vs eager tensors, per method

Time the whole default experiment as a process with any external timer; from empty caches (a new machine:
no inductor kernels, no built C loop):
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) GANBENCH_CACHE=$(mktemp -d) \
      /usr/bin/time -v ganbench experiment=gmm_heatmap hydra.run.dir=/tmp/gmm_bench
Threads: torch's default (all cores) unless --threads is given; subnormals are flushed as in the lab.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganbench.gmm.dynamics import UNROLLED_GRADIENTS, State  # noqa: E402
from ganbench.gmm.heatmap import classify, grid_starts, random_discriminators  # noqa: E402
from ganbench.gmm.config import GMMConfig  # noqa: E402
from ganbench.gmm.simulate import simulate  # noqa: E402
from ganbench.gmm import native  # noqa: E402

TARGET = (-0.5, 0.5)


def batch(runs: int, dtype: torch.dtype, seed: int = 0) -> State:
    """``runs`` paper-style runs: starts on the 21×21 grid, random discriminators on [-3, 3]."""
    g = torch.Generator().manual_seed(seed)
    starts = grid_starts(torch.linspace(-1, 1, 21, dtype=torch.float64))
    pick = torch.randint(starts.shape[1], (runs,), generator=g)
    ends = random_discriminators(runs, -3.0, 3.0, g)
    return State(starts[:, pick].to(dtype), ends.to(dtype), torch.ones(2, runs, dtype=torch.bool))


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up (CPU: wall clock)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench_heatmap(overrides) -> None:
    from hydra import compose, initialize_config_dir

    from ganbench.cli import config_dir
    from ganbench.gmm import run

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=gmm_heatmap", *overrides])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        results = run(cfg, Path(out))
        total = time.perf_counter() - t0
    print(f"total {total:.1f}s; per method {results['protocol']['seconds']}; "
          f"compiled {results['protocol']['compiled']}")
    for name, metric in results["metrics"].items():
        print(f"  {name:32s} {metric['final']}")


def bench_unroll_grad(runs: int, unroll: int, repeats: int) -> None:
    state = batch(runs, torch.float64)
    target = torch.tensor(TARGET, dtype=torch.float64)
    reference = None
    for name, fn in UNROLLED_GRADIENTS.items():
        seconds = timed(lambda: fn(state.mu, state.ends, state.alive, target, 0.3, unroll), repeats)
        value = fn(state.mu, state.ends, state.alive, target, 0.3, unroll)
        reference = value if reference is None else reference
        print(f"{name:9s} K={unroll} {runs} runs: {seconds * 1e3:8.2f} ms/step "
              f"(max |diff| to analytic {float((value - reference).abs().max()):.1e})")


def bench_dtype(runs: int, iterations: int, compiled: bool) -> None:
    spec = GMMConfig()
    outcomes = {}
    for dtype in (torch.float64, torch.float32):
        state = batch(runs, dtype)
        target = torch.tensor(TARGET, dtype=dtype)
        for method in ("first_order", "unrolled"):
            simulate(method, state, target, 0.3, 2, compiled=compiled, chunk=spec.chunk)  # warm-up / compile
            t0 = time.perf_counter()
            final, direction = simulate(method, state, target, 0.3, iterations, compiled=compiled, chunk=spec.chunk)
            seconds = time.perf_counter() - t0
            out = classify(final, direction, target, spec, method)
            outcomes[(dtype, method)] = out
            print(f"{str(dtype):14s} {method:12s} {runs} runs x {iterations} it: {seconds:6.2f}s "
                  f"success {float(out['success'].double().mean()):.4f}")
    for method in ("first_order", "unrolled"):
        a, b = outcomes[(torch.float64, method)], outcomes[(torch.float32, method)]
        print(f"{method}: runs whose success differs between float64 and float32: "
              f"{int((a['success'] != b['success']).sum())} / {runs}; disc. collapse differs: "
              f"{int((a['disc_collapse'] != b['disc_collapse']).sum())}")


def bench_compile(runs: int, repeats: int) -> None:
    for method in ("first_order", "unrolled", "optimal"):
        state = batch(runs if method != "optimal" else 441, torch.float64)
        target = torch.tensor(TARGET, dtype=torch.float64)
        for compiled in (False, True):
            seconds = timed(lambda: simulate(method, state, target, 0.3, 10, compiled=compiled, chunk=8192), repeats)
            print(f"{method:12s} {state.mu.shape[1]:6d} runs compiled={compiled!s:5s}: {seconds / 10 * 1e3:8.2f} ms/step")


def bench_native(runs: int, iterations: int) -> None:
    """Build time of the C loop, then per method: eager tensors (10 steps) vs the C loop (all ``iterations``)."""
    t0 = time.perf_counter()
    if native.library() is None:
        print(f"C loop unavailable: {native.unavailable_reason()}")
        return
    print(f"C loop ready in {time.perf_counter() - t0:.2f}s (built, or loaded from {native.cache_dir()})")
    spec = GMMConfig()
    for dtype in (torch.float32, torch.float64):
        state = batch(runs, dtype)
        target = torch.tensor(TARGET, dtype=dtype)
        for method in ("first_order", "unrolled"):
            eager = timed(lambda: simulate(method, state, target, 0.3, 10, chunk=8192), 1) / 10
            t0 = time.perf_counter()
            final, direction = native.simulate(method, state, target, 0.3, iterations,
                                               threads=torch.get_num_threads())
            seconds = time.perf_counter() - t0
            success = float(classify(final, direction, target, spec, method)["success"].double().mean())
            print(f"{str(dtype):14s} {method:12s} {runs} runs: eager {eager * 1e3:8.2f} ms/step; C loop "
                  f"{iterations} steps in {seconds:6.2f}s ({seconds / iterations * 1e3:.2f} ms/step), success {success:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["heatmap", "unroll-grad", "dtype", "compile", "native"])
    parser.add_argument("overrides", nargs="*", help="heatmap: Hydra overrides, e.g. gmm.grid=11")
    parser.add_argument("--runs", type=int, default=52920)
    parser.add_argument("--unroll", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="dtype: do not compile")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "heatmap":
        bench_heatmap(args.overrides)
    elif args.what == "unroll-grad":
        bench_unroll_grad(args.runs, args.unroll, args.repeats)
    elif args.what == "dtype":
        bench_dtype(args.runs, args.iterations, not args.eager)
    elif args.what == "native":
        bench_native(args.runs, args.iterations)
    else:
        bench_compile(args.runs, args.repeats)


if __name__ == "__main__":
    main()
