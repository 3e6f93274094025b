"""The hot loop never waits on the device: no host synchronisation outside check (log/checkpoint/eval) steps.

On the CPU there is no device to wait on, so the test counts the calls that would wait on a GPU: reading a
tensor's value on the host (``.item()``, ``.tolist()``, ``.numpy()``, ``.cpu()``, ``bool()``, ``float()``,
``int()`` of a tensor), attributed to the generator step during or after which they happen. Every step
that is not a check step must make none; a log step must make some (the loop reads its running sums
there), which is what shows that the counter sees the loop's reads at all. On a GPU,
``torch.cuda.set_sync_debug_mode("error")`` turns any synchronising CUDA call into an error over the same
steps.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import torch

from conftest import FAST, POINTS, compose

ITERATIONS, LOG_EVERY = 12, 5  # check steps: 5 and 10 (logging) and 12 (the final one)
CHECK_STEPS = {s for s in range(1, ITERATIONS + 1) if s % LOG_EVERY == 0 or s == ITERATIONS}
# Checkpoints, samples and evaluation only at the end, so that every other step is a plain step.
SCHEDULE = [f"train.iterations={ITERATIONS}", f"train.log_every={LOG_EVERY}", "train.ckpt_every=1000",
            "train.sample_every=1000", "eval.every=0"]
OBJECTIVES = ["vanilla", "dragan", "wgan_gp"]
# Each objective as one run, and DRAGAN as 3 replicas (each replica's draws come from its own generator).
# ... and the averaged generator (torch's AveragedModel reads its count on the host at every update).
CASES = [(o, []) for o in OBJECTIVES] + [("dragan", ["train.replicas=3"]), ("dragan", ["train.g_average=ema"]),
                                         ("vanilla", ["train.g_average=uniform", "train.replicas=2"])]
IDS = OBJECTIVES + ["dragan-replicas", "dragan-ema", "vanilla-uniform-replicas"]
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__")
# torch.optim's _get_value reads the step counter with .item(): that counter is a CPU tensor for the
# (default) non-capturable, non-fused optimizers, so it never waits on a device. Everything else counts.
HOST_RESIDENT_CALLERS = (str(Path(torch.optim.__file__).parent / "optimizer.py"),)


def prepared(run_dir: Path, objective: str, device: str, extra: List[str]):
    from ganbench.run.start import prepare

    overrides = FAST + POINTS + SCHEDULE + [f"objective={objective}", f"device={device}"] + extra
    return prepare(compose(overrides), run_dir), overrides


def wrap_steps(game, before: Callable[[int], None], after: Callable[[int], None]) -> Dict[str, int]:
    """Replace ``game.step`` (the loop's only call into the game) by one that reports the step number:
    ``before(k)`` as generator step k starts, ``after(k)`` as it returns (the loop's bookkeeping follows)."""
    state = {"step": 0}
    inner = game.step

    def step():
        state["step"] += 1
        before(state["step"])
        out = inner()
        after(state["step"])
        return out

    game.step = step
    return state


@pytest.mark.parametrize("objective,extra", CASES, ids=IDS)
def test_no_host_reads_outside_check_steps(tmp_path, monkeypatch, objective, extra):
    from ganbench.run.loop import run

    run_dir = tmp_path / "seed=0"
    start, overrides = prepared(run_dir, objective, "cpu", extra)
    state = wrap_steps(start.game, lambda k: None, lambda k: None)
    reads: Dict[int, List[str]] = defaultdict(list)  # step -> "method at file:line"

    def counting(name: str, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code.co_filename not in HOST_RESIDENT_CALLERS:
                reads[state["step"]].append(f"{name} at {caller.f_code.co_filename}:{caller.f_lineno}")
            return original(self, *args, **kwargs)
        return read

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    record = run(start, run_dir, overrides)
    monkeypatch.undo()

    assert record["status"] == "completed" and state["step"] == ITERATIONS
    plain = {k: v for k, v in reads.items() if 1 <= k <= ITERATIONS and k not in CHECK_STEPS}
    assert not plain, f"host reads on steps that are not check steps: {plain}"
    # The counter sees the loop's own reads: a log step reads the running sums (and the divergence flag).
    assert len(reads[LOG_EVERY]) > 0, f"no host read counted on log step {LOG_EVERY}: the counter is blind"


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs CUDA: torch.cuda.set_sync_debug_mode('error') checks for device synchronisation; "
                           "the CPU test above counts host reads instead")
@pytest.mark.parametrize("objective,extra", CASES, ids=IDS)
def test_no_cuda_sync_outside_check_steps(tmp_path, objective, extra):
    from ganbench.run.loop import run

    run_dir = tmp_path / "seed=0"
    start, overrides = prepared(run_dir, objective, "cuda", extra)
    seen = []

    def before(k: int) -> None:
        # Step 1 runs in the default mode: first calls may set up (cuDNN autotuning, allocator growth).
        if k >= 2:
            torch.cuda.set_sync_debug_mode("error")

    def after(k: int) -> None:
        seen.append(k)
        # The loop's reads after a check step are allowed; after any other step its bookkeeping is checked too.
        torch.cuda.set_sync_debug_mode("default" if k in CHECK_STEPS else "error")

    wrap_steps(start.game, before, after)
    try:
        record = run(start, run_dir, overrides)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert record["status"] == "completed", record.get("error")
    assert seen == list(range(1, ITERATIONS + 1))
