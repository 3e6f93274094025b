"""No tensor of a training step is made on the host when the run is on a device (issue: the GPU path).

On a GPU, a tensor that a step builds on the CPU and then meets the device's tensors is a host-to-device
copy per step (and, copied from pageable memory, a wait), or an error. This machine has no GPU, so the test
runs on the CPU with a *device marker*: a tensor counts as "on the device" when it was put there the way a
GPU run puts it there:

- a factory call (``torch.randn``, ``torch.zeros``, ``torch.arange``, ...) given ``device=`` the run's device
  as a ``torch.device`` (a literal string ``"cpu"`` means the host on purpose, so it does not mark);
- ``Tensor.to(device)`` / ``Module.to(device)`` with the run's device;
- any operator with a marked input: its outputs are marked (``torch.randn_like``, arithmetic, views, ...);
- an operator without tensor inputs that torch itself calls with the run's device (autograd's zero
  gradients, ...), outside a Python factory call.

Marks are kept per storage, so views share them. A ``TorchDispatchMode`` sees every operator of the run and
records an operator that mixes marked tensors with unmarked ones of one or more dimensions (0-dimensional
host scalars, such as the optimizers' step counters, are allowed: CUDA kernels read them as numbers), and
any ``Tensor.to(device)`` of an unmarked tensor, a scalar included (a host-to-device copy per step). Only
operators inside the game's generator steps count; the loop's bookkeeping at log and checkpoint steps reads
values on the host on purpose (tests/test_host_sync.py).
"""
from __future__ import annotations

import functools
import traceback
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from conftest import FAST, POINTS, compose

REPO = Path(__file__).resolve().parents[1]
FACTORIES = ("randn", "rand", "randint", "randperm", "zeros", "ones", "empty", "full", "arange", "linspace",
             "tensor", "as_tensor", "eye", "normal")


def _options(name: str) -> List[str]:
    return sorted(p.stem for p in (REPO / "conf" / name).glob("*.yaml"))


class Placement(TorchDispatchMode):
    """Tracks which storages are 'on the device' and records operators that mix them with host tensors."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.marked: set = set()
        self.counting = False
        self.in_python_factory = 0  # inside a torch.<factory> call from Python: its device= decides
        self.violations: List[Tuple[str, str]] = []

    @staticmethod
    def _key(t: torch.Tensor) -> Any:
        if t.device.type == "meta" or t.numel() == 0:
            return None
        try:
            return t.untyped_storage().data_ptr()
        except Exception:  # tensors without storage (sparse, nested) do not occur in a step
            return None

    def mark(self, out: Any) -> Any:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and self._key(t) is not None:
                self.marked.add(self._key(t))
        return out

    def is_marked(self, t: torch.Tensor) -> bool:
        return self._key(t) in self.marked

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.numel() > 0]
        if not tensors and not self.in_python_factory and kwargs.get("device") == self.device:
            # Made inside torch with its input's options (autograd's zero gradients, ...): on the device.
            return self.mark(out)
        on_device = [t for t in tensors if self.is_marked(t)]
        if on_device:
            host = [t for t in tensors if not self.is_marked(t) and t.dim() > 0]
            if host and self.counting:
                self.record(str(func))
            self.mark(out)
        return out

    def record(self, what: str) -> None:
        """A violation, with the innermost frame of ganbench (or of torch, for its own modules) that made it."""
        stack = traceback.extract_stack()[:-2]
        where = [f for f in stack if "/ganbench/" in f.filename.replace("\\", "/")] or \
            [f for f in stack if "/torch/" in f.filename.replace("\\", "/") and "_python_dispatch" not in f.filename]
        site = f"{where[-1].filename}:{where[-1].lineno}" if where else "?"
        self.violations.append((what, site))

    def wants(self, device: Any) -> bool:
        return isinstance(device, torch.device) and device == self.device


def install(monkeypatch, mode: Placement) -> None:
    """The marking rules above, as wrappers of torch's factories and of ``.to``."""
    for name in FACTORIES:
        original = getattr(torch, name)

        def factory(*args, __original=original, **kwargs):
            mode.in_python_factory += 1
            try:
                out = __original(*args, **kwargs)
            finally:
                mode.in_python_factory -= 1
            return mode.mark(out) if mode.wants(kwargs.get("device")) else out

        monkeypatch.setattr(torch, name, functools.wraps(original)(factory))

    tensor_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if mode.counting and mode.wants(target) and not mode.is_marked(self) and self.numel() > 0:
            mode.record(f"Tensor.to({target}) of a host tensor {tuple(self.shape)}")
        out = tensor_to(self, *args, **kwargs)
        return mode.mark(out) if mode.wants(target) else out

    monkeypatch.setattr(torch.Tensor, "to", to)
    module_to = nn.Module.to

    def module_to_marked(self, *args, **kwargs):
        out = module_to(self, *args, **kwargs)
        target = kwargs.get("device", args[0] if args else None)
        if mode.wants(target):
            for t in list(self.parameters()) + list(self.buffers()):
                mode.mark(t)
        return out

    monkeypatch.setattr(nn.Module, "to", module_to_marked)


def trace(tmp_path: Path, monkeypatch, overrides: List[str], steps: int = 3,
          data: List[str] = POINTS) -> List[Tuple[str, str]]:
    """The mixed operators of ``steps`` generator steps of the run composed from ``overrides``."""
    from ganbench.run.start import prepare
    from ganbench.run.loop import run

    schedule = [f"train.iterations={steps}", "train.log_every=1000", "train.ckpt_every=1000",
                "train.sample_every=1000"]
    all_overrides = FAST + data + schedule + list(overrides)
    mode = Placement(torch.device("cpu"))
    install(monkeypatch, mode)
    with mode:
        start = prepare(compose(all_overrides), tmp_path / "seed=0")
        # On the CPU, place() keeps an image dataset's tensor where it is; a GPU run with dataset.on_device
        # true (or auto, when it fits) holds it on the device.
        if isinstance(getattr(start.data, "data", None), torch.Tensor):
            mode.mark(start.data.data)
        games = [start.game] if start.game is not None else [p.game for p in start.parts]
        for game in games:
            inner = game.step

            def step(__inner=inner):
                mode.counting = True
                try:
                    return __inner()
                finally:
                    mode.counting = False

            game.step = step
        record = run(start, tmp_path / "seed=0", all_overrides)
    monkeypatch.undo()
    assert record["status"] == "completed", record.get("error")
    return mode.violations


def _cases() -> List[Tuple[str, List[str]]]:
    cases: List[Tuple[str, List[str]]] = []
    special = {"consensus": ["dynamics=simultaneous"], "weight_clip": ["objective=wgan"]}
    for objective in _options("objective"):
        cases.append((f"objective={objective}", [f"objective={objective}"]))
    for penalty in _options("penalty"):
        cases.append((f"penalty={penalty}", [f"penalty={penalty}"] + special.get(penalty, [])))
    for dynamics in _options("dynamics"):
        cases.append((f"dynamics={dynamics}", [f"dynamics={dynamics}"]))
    cases += [
        ("replicas-dragan", ["objective=dragan", "train.replicas=3"]),
        ("replicas-wgan_gp", ["objective=wgan_gp", "train.replicas=2"]),
        ("replicas-unrolled", ["dynamics=unrolled", "train.replicas=2"]),
        ("replicas-pack2", ["pack=2", "train.replicas=2"]),
        ("pack2", ["pack=2"]),
        ("instance-noise", ["dynamics.instance_noise=0.1"]),
        ("g-average-ema", ["objective=dragan", "train.g_average=ema"]),
        ("g-average-uniform", ["train.g_average=uniform"]),
        ("mixgan-k3", ["objective=mixgan", "objective.k=3"]),
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("overrides", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_no_host_tensor_meets_device_tensors_in_a_step(tmp_path, monkeypatch, overrides):
    violations = trace(tmp_path, monkeypatch, overrides)
    assert not violations, ("operators of a step mix device tensors with host tensors: "
                            + "; ".join(sorted({f"{op} at {site}" for op, site in violations})))


@pytest.mark.parametrize("overrides", [["augment=diffaug", "objective=dragan"], ["augment=diffaug", "objective=wgan_gp",
                                                                        "train.replicas=2"]], ids=["diffaug", "diffaug-replicas"])
def test_image_steps_make_no_host_tensors(tmp_path, monkeypatch, image_overrides, overrides):
    violations = trace(tmp_path, monkeypatch, overrides, data=image_overrides)
    assert not violations, "; ".join(sorted({f"{op} at {site}" for op, site in violations}))


def test_the_marker_sees_a_host_tensor_made_inside_a_step(tmp_path, monkeypatch):
    """The tracer is not blind: an index tensor built on the host inside D's forward is caught."""
    from ganbench.archs import mlp

    original = nn.Linear.forward

    def forward(self, x):
        rows = torch.arange(x.shape[0])  # no device=: on a GPU run, a host tensor (copied every step)
        return original(self, x[rows])

    monkeypatch.setattr(nn.Linear, "forward", forward)
    assert mlp  # the family whose layers are patched
    violations = trace(tmp_path, monkeypatch, [])
    assert any("index" in op for op, _ in violations), violations
