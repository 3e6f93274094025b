"""Many seeds in one process (``train.replicas=N``): the replicas are a batch dimension of the models.

A run's tensors have a batch axis, ``(B, *sample)``. N replicas stack N such runs along a leading replica
axis, ``(N, B, *sample)``, and train them as one program:

- ``Replicated`` holds the parameters and buffers of N copies of a network stacked along that axis and
  applies replica i's weights to replica i's inputs: natively for MLPs (one ``baddbmm`` per linear layer),
  otherwise by ``torch.func.vmap`` over ``functional_call`` (convolutions become grouped ones, and batch
  norm keeps per-replica statistics in per-replica running buffers, spectral normalisation per-replica
  power-iteration vectors ũ, ṽ: ``StackedSpectralNorm``).
- ``Layout`` is the one place that knows the difference: where the batch axis is, how a loss is
  reduced over the runs, and where random numbers come from. A run draws from torch's global RNG exactly
  as before; replica i draws from its own ``torch.Generator``, whose state is the one the separate run with
  seed S+i would have at the same point, so each replica follows its separate run.
- One optimizer over the stacked parameters is N independent optimizers: Adam, RMSprop and SGD (with
  momentum and weight decay) update every element from that element's own gradient and state, and their
  step count is the same for every replica. Weight clipping is elementwise too. Nothing in ganbench takes a
  norm over all parameters (gradient clipping would; it would need a per-replica norm).
- Losses reduce per replica: each is a mean over the batch axis (the last axis of D's outputs), giving
  one loss per replica, and the game backpropagates their sum, so replica i's gradient is the gradient of
  its own loss whatever N is.

``split_state`` / ``join_states`` convert between the stacked state of a replicated game and the
checkpoint of each replica's own run directory, which is exactly the checkpoint its separate run writes.
A method that is not batched (``not_batched``: its class says ``replicable = False``) trains the job's
seeds one after another instead (ganbench/run/start.py ``prepare_in_turn``).
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import _SpectralNorm

from .errors import ConfigError

Draw = Callable[[Optional[torch.Generator]], Tensor]


class Layout:
    """The batch layout of a game: one run (``generators=None``) or N replicas.

    For replicas, ``generators`` maps a device type ("cpu", "cuda") to one ``torch.Generator`` per
    replica on that device: replica i's stand-in for the global RNG of that device in its separate run.
    ``batch_dims`` is 1 for a run's ``(B, *sample)`` tensors and 2 for replicas' ``(N, B, *sample)``;
    ``run_shape`` is the shape of a per-run scalar: ``()`` or ``(N,)``.
    """

    def __init__(self, generators: Optional[Dict[str, Sequence[torch.Generator]]] = None):
        self.generators = {k: list(v) for k, v in generators.items()} if generators is not None else None
        self.replicas = len(next(iter(self.generators.values()))) if self.generators else 0
        self.batch_dims = 2 if self.generators is not None else 1
        self.run_shape = (self.replicas,) if self.generators is not None else ()

    # ---- random numbers: each run from its own stream ----
    def draw(self, fn: Draw, device: torch.device) -> Tensor:
        """``fn(generator)`` for a run (generator None: torch's global RNG, the draw a run always made);
        for replicas ``fn(g_i)`` with each replica's generator on ``device``, stacked on the replica axis."""
        if self.generators is None:
            return fn(None)
        return torch.stack([fn(g) for g in self.generators[torch.device(device).type]])

    def sample_shape(self, x: Tensor) -> torch.Size:
        """The shape of one run's part of ``x``: ``(B, *sample)``."""
        return x.shape[self.batch_dims - 1:]

    def rand_like(self, x: Tensor) -> Tensor:
        shape = self.sample_shape(x)
        return self.draw(lambda g: torch.rand(shape, generator=g, device=x.device, dtype=x.dtype), x.device)

    def randn_like(self, x: Tensor) -> Tensor:
        shape = self.sample_shape(x)
        return self.draw(lambda g: torch.randn(shape, generator=g, device=x.device, dtype=x.dtype), x.device)

    def per_sample_uniform(self, x: Tensor) -> Tensor:
        """One U[0,1) draw per sample, shaped to broadcast over x's sample dimensions."""
        shape = (x.shape[self.batch_dims - 1],) + (1,) * (x.dim() - self.batch_dims)
        return self.draw(lambda g: torch.rand(shape, generator=g, device=x.device, dtype=x.dtype), x.device)

    def all_generators(self) -> List[torch.Generator]:
        return [g for gens in (self.generators or {}).values() for g in gens]

    @contextlib.contextmanager
    def fork(self, device: torch.device) -> Iterator[None]:
        """Run a block (diagnostics) without moving any run's random stream."""
        if self.generators is None:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                yield
            return
        gens = self.all_generators()
        saved = [g.get_state() for g in gens]
        try:
            yield
        finally:
            for g, state in zip(gens, saved):
                g.set_state(state)

    # ---- reductions ----
    def flat_samples(self, x: Tensor) -> Tensor:
        """x as ``(*batch, features)``: every sample's values in one axis (for per-sample norms)."""
        return x.flatten(self.batch_dims)

    def std(self, x: Tensor) -> Tensor:
        """The population std of each run's whole batch (one scalar per run, broadcastable over x)."""
        if self.generators is None:
            return x.std(correction=0)
        return x.std(dim=tuple(range(1, x.dim())), correction=0, keepdim=True)

    def run_mean(self, x: Tensor) -> Tensor:
        """The mean of each run's values (statistics such as the mean D output): a scalar, or (N,)."""
        return x.mean() if self.generators is None else x.flatten(1).mean(1)

    def total(self, loss: Tensor) -> Tensor:
        """The scalar to backpropagate: a run's loss, or the sum of the replicas' (each its own mean)."""
        return loss if loss.dim() == 0 else loss.sum()

    @property
    def cat_dim(self) -> int:
        """The batch axis, along which real and fake batches are concatenated."""
        return self.batch_dims - 1


SINGLE = Layout()


def batched_natively(module: nn.Module) -> bool:
    """Whether N copies of ``module`` run as one native batched program (``Replicated``): a network of linear
    layers whose forward takes leading batch axes (arch=mlp); other networks run through ``vmap``."""
    return getattr(module, "batched_forward", False) and all(
        isinstance(m, nn.Linear) or not (list(m.parameters(recurse=False)) or list(m.buffers(recurse=False)))
        for m in module.modules())


def refuse_compiled_vmap(G: nn.Module, D: nn.Module) -> None:
    """``train.compile`` with ``train.replicas``: the compiled replicated step is the native batched program of
    linear networks (checked equal to eager, tests/test_compile.py); networks that replicas run through
    ``vmap`` are refused in one line. G, D: the single networks, or their ``Replicated`` stacks."""
    from .errors import ConfigError

    def native(m: nn.Module) -> bool:
        return m.native if isinstance(m, Replicated) else batched_natively(m)

    if not (native(G) and native(D)):
        raise ConfigError("train.compile: with train.replicas, the compiled replicated step is that of networks of "
                          "plain linear layers (arch=mlp: one batched program); these replicas run through vmap, "
                          "whose compiled step is not checked against eager; use train.compile=false, or "
                          "train.replicas=1")


class Replicated(nn.Module):
    """N copies of a network with their parameters and buffers stacked: input ``(N, B, ...)`` → output
    ``(N, B, ...)``, replica i computed with copy i's weights (``vmap`` over ``functional_call``).

    ``self.module`` is the first copy with every parameter and buffer replaced by the stack of all N under
    the same name, so ``state_dict()`` has the run's keys with a leading replica axis, and its modules are
    the run's modules (``has_batchnorm`` and the like see the same layers). ``replica(i)`` is a plain copy of
    the network holding replica i's current weights (for evaluation, samples and diagnostics).
    """

    def __init__(self, modules: Sequence[nn.Module], side: str):
        super().__init__()
        first = modules[0]
        shapes = [[(k, tuple(v.shape)) for k, v in m.state_dict().items()] for m in modules]
        if any(s != shapes[0] for s in shapes[1:]):
            raise ConfigError(f"train.replicas: the replicas' {side} networks differ in their layers or shapes "
                              "(the architecture depends on the seed); replicas need one architecture: run the "
                              "seeds as separate jobs (train.replicas=1)")
        self.replicas = len(modules)
        self.z_dim = getattr(first, "z_dim", None)
        self._single = [copy.deepcopy(first)]  # a list: not a submodule, so neither trained nor saved
        self.module = copy.deepcopy(first)
        # Networks of linear layers whose forward takes leading batch axes (arch=mlp) run natively: each
        # nn.Linear becomes a batched matrix product with its bias fused (baddbmm). vmap would do the same
        # maths at several times the per-operation cost, which is what a toy step consists of.
        self.native = batched_natively(first)
        if self.native:
            for name, m in list(self.module.named_modules()):
                if isinstance(m, nn.Linear):
                    owner, _, leaf = name.rpartition(".")
                    setattr(self.module.get_submodule(owner) if owner else self.module, leaf,
                            StackedLinear(m.in_features, m.out_features, m.bias is not None))
        for m in self.module.modules():
            if type(m) is _SpectralNorm:
                m.__class__ = StackedSpectralNorm  # the same computation, written so that vmap can batch it
        with torch.no_grad():
            for name, _ in first.named_parameters():
                stacked = torch.stack([m.get_parameter(name).detach() for m in modules])
                _set(self.module, name, nn.Parameter(stacked, requires_grad=first.get_parameter(name).requires_grad))
            for name, buf in first.named_buffers():
                _set(self.module, name, torch.stack([m.get_buffer(name) for m in modules]), buffer=True)
        # AveragedModel and other wrappers load through nn.Module's recursion: map the run's keys to ours.
        self._register_load_state_dict_pre_hook(_add_module_prefix)

    def forward(self, x: Tensor) -> Tensor:
        module = self.module
        if self.native:
            return module(x)
        params = dict(module.named_parameters())
        buffers = dict(module.named_buffers())

        def one(p: Dict[str, Tensor], b: Dict[str, Tensor], xi: Tensor) -> Tensor:
            return torch.func.functional_call(module, (p, b), (xi,))

        return torch.func.vmap(one, randomness="error")(params, buffers, x)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Dict[str, Any]:
        """The run's keys, each with a leading replica axis."""
        return self.module.state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)

    def replica(self, i: int) -> nn.Module:
        """A plain copy of the network with replica i's current parameters and buffers."""
        state = {k: v[i] for k, v in self.module.state_dict().items()}
        device = next(iter(state.values())).device if state else torch.device("cpu")
        view = copy.deepcopy(self._single[0]).to(device)  # the template stays where it was built (CPU)
        view.load_state_dict(state)
        view.train(self.training)
        return view


class StackedSpectralNorm(_SpectralNorm):
    """torch's spectral normalisation (``torch.nn.utils.parametrizations.spectral_norm``) with its power
    iteration ũ ← Wṽ/‖Wṽ‖, ṽ ← Wᵀũ/‖Wᵀũ‖ written into the buffers with ``copy_`` instead of ``normalize(...,
    out=)``, which vmap cannot batch. Under ``Replicated``'s vmap the buffers are the stacks of the replicas'
    ũ and ṽ, so each replica updates its own vectors in place, as its separate run does; the values are
    those of torch's method (the same operations, only the write differs)."""

    @torch.no_grad()
    def _power_method(self, weight_mat: Tensor, n_power_iterations: int) -> None:
        for _ in range(n_power_iterations):
            self._u.copy_(F.normalize(torch.mv(weight_mat, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(torch.mv(weight_mat.H, self._u), dim=0, eps=self.eps))


class StackedLinear(nn.Module):
    """N linear layers: ``weight`` (N, out, in) and ``bias`` (N, out), the stacks of the runs' nn.Linear
    parameters under the same names; y_i = x_i W_iᵀ + b_i for x of shape (N, B, in), one baddbmm."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(0))
        self.bias = nn.Parameter(torch.empty(0)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def _set(root: nn.Module, name: str, value: Tensor, buffer: bool = False) -> None:
    owner, _, leaf = name.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    if buffer:
        module._buffers[leaf] = value
    else:
        module._parameters[leaf] = value


def _add_module_prefix(state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "module.")]:
        state_dict[prefix + "module." + key[len(prefix):]] = state_dict.pop(key)


# ---- checkpoints: the stacked game state <-> each replica's own checkpoint ----
#: Entries shared by every replica (the same value for all), not stacked.
SHARED_KEYS = {"step", "n_averaged"}


def _split(value: Any, i: int) -> Any:
    if isinstance(value, dict):
        return {k: (v if k in SHARED_KEYS else _split(v, i)) for k, v in value.items()}
    if isinstance(value, list):
        return [_split(v, i) for v in value]
    if isinstance(value, Tensor):
        return value[i].clone()
    return value


def _join(values: List[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {k: (first[k] if k in SHARED_KEYS else _join([v[k] for v in values])) for k in first}
    if isinstance(first, list):
        return [_join([v[j] for v in values]) for j in range(len(first))]
    if isinstance(first, Tensor):
        return torch.stack(values)
    return first


#: The pieces of a game's state that hold per-replica tensors; the rest (d_step) is shared.
STACKED = ("G", "D", "opt_G", "opt_D", "G_avg")


def split_state(state: Dict[str, Any], i: int) -> Dict[str, Any]:
    """Replica i's part of a replicated game's ``state_dict()``: the checkpoint its separate run writes.

    Model tensors, optimizer moments and averaged weights are indexed at i; optimizer hyperparameters
    (``param_groups``), step counts and ``n_averaged`` are the same for every replica and copied.
    """
    out = dict(state)
    for key in STACKED:
        if state.get(key) is None:
            continue
        if key.startswith("opt_"):
            out[key] = {"state": _split(state[key]["state"], i), "param_groups": copy.deepcopy(state[key]["param_groups"])}
        else:
            out[key] = _split(state[key], i)
    return out


def join_states(states: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The replicated game's state from each replica's checkpoint (inverse of ``split_state``)."""
    out = dict(states[0])
    for key in STACKED:
        if states[0].get(key) is None:
            continue
        if key.startswith("opt_"):
            out[key] = {"state": _join([s[key]["state"] for s in states]), "param_groups": states[0][key]["param_groups"]}
        else:
            out[key] = _join([s[key] for s in states])
    return out


# ---- the runs of a replicated job: seeds, directories, configs ----
def replica_dirs(run_dir: Path, seed: int, n: int) -> List[Path]:
    """The run directories of seeds seed..seed+n-1. The job's directory is named after its seed
    (``.../seed=<S>``, the default ``hydra.run.dir`` and sweep ``subdir``): the replicas are its siblings, the
    directories their separate runs use, so the job's own directory is replica 0's. Otherwise (a custom
    ``hydra.run.dir``) they are subdirectories ``<dir>/seed=<s>``."""
    run_dir = Path(run_dir)
    if run_dir.name == f"seed={seed}":
        return [run_dir.with_name(f"seed={seed + i}") for i in range(n)]
    return [run_dir / f"seed={seed + i}" for i in range(n)]


def replica_config(cfg: Any, seed: int) -> Any:
    """The config of the separate run of ``seed``: the job's, with that seed and ``train.replicas=1``."""
    from omegaconf import OmegaConf, open_dict

    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.seed = seed
        out.train.replicas = 1
    OmegaConf.set_readonly(out, OmegaConf.is_readonly(cfg))
    return out


def replica_overrides(overrides: Sequence[str], seed: int, job_seed: int) -> List[str]:
    """The command-line overrides of the separate run of ``seed``: the job's without ``train.replicas``,
    with ``seed=<seed>`` (none for the job's own seed when the job gave none)."""
    out, had_seed = [], False
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key == "train.replicas":
            continue
        if key == "seed":
            had_seed = True
            item = f"seed={seed}"
        out.append(item)
    if not had_seed and seed != job_seed:
        out.append(f"seed={seed}")
    return out


def not_batched(spec: Any, dynamics: Any, cfg: Any) -> Optional[str]:
    """Why a job's method cannot be batched as replicas (``replicable`` is False), or None when it can.

    A method is batched when its losses reduce per run (means over the batch axis), its random draws go
    through the game's ``Layout`` and it keeps no state beyond the players and their optimizers. The rest
    (extra players, mixtures, penalties on both players or with their own state) train their
    seeds one after another in the same job, each exactly as its separate run.
    """
    loss = cfg.objective.get("loss")
    for what, obj in ((f"objective={cfg.objective.get('name')} (loss {loss})", spec.loss),
                      (f"penalty={cfg.penalty.get('name')}", spec.penalty),
                      (f"dynamics={getattr(dynamics, 'name', '?')}", dynamics)):
        if not getattr(obj, "replicable", False):
            return what
    return None
