"""Shared test pieces: the bilinear game with scalar players (min_x max_y xy under the Wasserstein loss:
L_D = xy, L_G = -xy), and the crash-and-resume check every stateful method uses."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest
import torch
from torch import nn

from conftest import assert_same_tensors, load_ckpt, run_train


class Point(nn.Module):
    """G(z) = x for every z: the generator is one scalar."""

    z_dim = 1

    def __init__(self, x: float):
        super().__init__()
        self.x = nn.Parameter(torch.tensor([[x]]))

    def forward(self, z):
        return self.x.expand(z.shape[0], 1)


class Linear1(nn.Module):
    """D(v) = y·v: the discriminator is one scalar."""

    def __init__(self, y: float):
        super().__init__()
        self.y = nn.Parameter(torch.tensor(y))

    def forward(self, v):
        return self.y * v[:, 0]


class Const:
    """Real data at the point a (the origin by default)."""

    kind = "points"
    sample_device = torch.device("cpu")

    def __init__(self, a: float = 0.0):
        self.a = a

    def sample(self, n, generator=None):
        return torch.full((n, 1), float(self.a))


Zeros = Const


def crash_at(monkeypatch, g_step: int) -> None:
    """Make every game's step raise once it has taken ``g_step`` generator steps (a kill after a checkpoint)."""
    from ganbench.dynamics import DYNAMICS

    for cls in set(DYNAMICS.values()):
        original = cls.step

        def step(self, original=original):
            if self.g_step == g_step:
                raise RuntimeError("killed")
            return original(self)

        monkeypatch.setattr(cls, "step", step)


STATE_KEYS = ("G", "D", "opt_G", "opt_D", "G_avg", "extra", "extra_opt", "loss_state", "penalty_state", "game_state",
              "rng", "d_step", "step")


def assert_resumes_exactly(tmp_path: Path, monkeypatch, overrides: Sequence[str], at: int = 3, total: int = 6) -> dict:
    """``at`` steps, a crash, a resume to ``total`` == ``total`` straight steps: every checkpointed tensor
    equal. Returns the straight run's checkpoint."""
    over = list(overrides) + [f"train.ckpt_every={at}", f"train.iterations={total}"]
    run_train(tmp_path / "straight", over)
    with monkeypatch.context() as m:
        crash_at(m, at)
        with pytest.raises(RuntimeError, match="killed"):
            run_train(tmp_path / "split", over)
    assert load_ckpt(tmp_path / "split")["step"] == at
    run_train(tmp_path / "split", over)
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "split")
    keys = [k for k in STATE_KEYS if k in a]
    assert keys == [k for k in STATE_KEYS if k in b]
    for key in keys:
        assert_same_tensors(a[key], b[key], key)
    return a
