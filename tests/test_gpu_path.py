"""The GPU path's pieces that can be checked on the CPU: the averaged generator's device-side update."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ganbench.dynamics.base import Average, make_average


def _generator() -> nn.Module:
    torch.manual_seed(0)
    # Batch norm: float running statistics and an integer counter, both averaged (use_buffers=True).
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _train_a_little(G: nn.Module) -> None:
    G.train()
    G(torch.randn(16, 4)).pow(2).mean().backward()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)


@pytest.mark.parametrize("kind", ["ema", "uniform"])
def test_average_equals_torchs_averaged_model(kind):
    """The host-side count changes nothing in the values: bit-identical to torch.optim.swa_utils on the CPU."""
    G = _generator()
    theirs = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(0.9) if kind == "ema" else None, use_buffers=True)
    ours = make_average(G, kind, 0.9)
    assert isinstance(ours, Average)
    for _ in range(20):
        _train_a_little(G)
        theirs.update_parameters(G)
        ours.update_parameters(G)
    a, b = theirs.state_dict(), ours.state_dict()
    assert a.keys() == b.keys()  # checkpoints written before keep loading
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(b["n_averaged"]) == 20 and ours.count == 20


@pytest.mark.parametrize("kind", ["ema", "uniform"])
def test_a_loaded_average_continues_as_the_uninterrupted_one(kind):
    """Resume: loading a state sets the host count from the checkpoint's n_averaged (else the next update
    would copy θ instead of averaging)."""
    G = _generator()
    straight = make_average(G, kind, 0.9)
    for _ in range(3):
        _train_a_little(G)
        straight.update_parameters(G)
    resumed = make_average(G, kind, 0.9)
    resumed.load_state_dict(straight.state_dict())
    assert resumed.count == 3
    for _ in range(2):
        _train_a_little(G)
        straight.update_parameters(G)
        resumed.update_parameters(G)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_average_update_reads_nothing_on_the_host(monkeypatch):
    """torch's update branches on bool(n_averaged == 0) at every call; ours never reads a tensor's value."""
    G = _generator()
    avg = make_average(G, "uniform", 0.9)
    reads = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def read(self, *args, __original=original, __name=name, **kwargs):
            reads.append(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    for _ in range(3):
        avg.update_parameters(G)
    monkeypatch.undo()
    assert reads == []
    # Its count lives with the averaged weights, on G's device (CUDA: no copy to the device per update).
    assert avg.n_averaged.device == next(G.parameters()).device
