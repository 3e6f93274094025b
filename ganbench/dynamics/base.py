"""The game-step interface: the players, their optimizers and one generator step of the game.

The training loop (ganbench/run/loop.py) keeps only the schedule; everything that decides how the players
are updated lives in a ``Game``. A game is built from the objective's loss, the penalty and the players;
it owns its state, which goes into the checkpoint by name (``state_dict`` / ``load_state_dict``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from ..packing import pack
from ..replicas import SINGLE, Layout


def make_optimizer(kind: str, params: Iterator[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    """torch's optimizer ``kind`` with the player's settings; ``foreach``/``fused`` null leave torch's choice."""
    kernels = {k: getattr(cfg, k) for k in ("foreach", "fused") if getattr(cfg, k, None) is not None}
    if kind == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                                **kernels)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, **kernels)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, **kernels)


def make_average(G: nn.Module, kind: str, beta: float) -> Optional[nn.Module]:
    """Averaged generator weights (DRAGAN paper §2.2): EMA θ̄ ← βθ̄ + (1-β)θ, or uniform θ̄_T = (1/T)Σθ_t."""
    if kind == "none":
        return None
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    return Average(G, get_ema_multi_avg_fn(beta) if kind == "ema" else None)


class Average(torch.optim.swa_utils.AveragedModel):
    """torch's AveragedModel (its state_dict, so checkpoints are unchanged) with an update that never waits on
    the device: torch's ``update_parameters`` branches on ``bool(n_averaged == 0)`` every call (a host read of a
    device tensor) and copies its count to the device. Here the count's buffer lives on G's device and is only
    written (``add_``); the branch reads a host copy of it, set again whenever a state is loaded.

    The update, over parameters and buffers (``use_buffers=True``): the first call copies θ; a later one, with
    n earlier updates, is EMA θ̄ ← βθ̄ + (1-β)θ (``ema_fn``, torch's foreach lerp per dtype group) or uniform
    θ̄ ← θ̄ + (θ - θ̄)/(n+1) (``ema_fn`` None: tensor by tensor, n on the device, as torch does on the CPU; its
    foreach path would divide integer buffers, BatchNorm's counter, with addcdiv, which raises).
    """

    def __init__(self, G: nn.Module, ema_fn: Any):
        device = next(iter(G.parameters())).device
        super().__init__(G, device=device, multi_avg_fn=ema_fn, use_buffers=True)
        self.count = 0  # host copy of n_averaged
        self.register_load_state_dict_post_hook(Average._reload_count)

    @staticmethod
    def _reload_count(module: "Average", _incompatible: Any) -> None:
        module.count = int(module.n_averaged)  # once per load, not per step

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        from itertools import chain

        averaged = [p.detach() for p in chain(self.module.parameters(), self.module.buffers())]
        current = [p.detach() for p in chain(model.parameters(), model.buffers())]
        if self.count == 0:
            torch._foreach_copy_(averaged, current)
        elif self.multi_avg_fn is None:
            for a, c in zip(averaged, current):
                a.copy_(a + (c - a) / (self.n_averaged + 1))
        else:
            groups: Dict[Any, Any] = {}
            for a, c in zip(averaged, current):
                pair = groups.setdefault(a.dtype, ([], []))
                pair[0].append(a)
                pair[1].append(c)
            for avg, cur in groups.values():
                self.multi_avg_fn(avg, cur, self.count)
        self.n_averaged.add_(1)
        self.count += 1


def has_batchnorm(module: nn.Module) -> bool:
    """Whether outputs depend on the other samples of the batch (batch norm, minibatch discrimination):
    then real and fake batches must go through D separately."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) or getattr(m, "couples_batch", False)
               for m in module.modules())


@dataclass
class Players:
    """The two players, their optimizers and the averaged generator (None unless train.g_average)."""

    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    G_avg: Optional[nn.Module] = None
    #: players an objective adds (``Loss.players``), by name, and their optimizers (None: not trained)
    extra: Dict[str, nn.Module] = field(default_factory=dict)
    extra_opt: Dict[str, Optional[torch.optim.Optimizer]] = field(default_factory=dict)


@dataclass
class Game:
    """One generator step of the game (``step``); subclasses set the order and form of the updates.

    The dataclass fields are the keys of the matching ``conf/dynamics/*.yaml`` (besides ``name``). ``bind``
    attaches what a config cannot hold: the players, the loss, the penalty, the data and the batch size.
    ``step`` returns the step's statistics as one device tensor in the order of train.SUMS
    (D loss, G loss, penalty, mean D(x), mean D(G(z))), without synchronising with the host.
    """

    name = "base"
    #: Whether replicas of this schedule are batched (train.replicas): batches through ``self.layout`` and losses
    #: backpropagated with ``layout.total``; otherwise the seeds train in turn (ganbench/replicas.py).
    replicable = False
    #: Instance noise (Arjovsky & Bottou 2017; Sønderby et al. 2017): Gaussian noise of std σ added to every
    #: input of D, real and fake alike, so that the two distributions overlap. 0 = off.
    instance_noise: float = 0.0
    #: Anneal σ linearly to 0 over train.iterations: σ_t = σ·(1 - t/T) (Sønderby et al. anneal it to 0).
    noise_anneal: bool = False
    #: PacGAN packing (the top-level ``pack``, ganbench/packing.py): D sees packs of this many samples. Set by
    #: ``bind``; not a dynamics key.
    pack = 1
    #: The augmentation of D's inputs (``augment``, ganbench/augment/), None for none. Set by ``bind``.
    augment = None
    #: ``train.precision`` (ganbench/precision.py) and, for fp16, each player's loss scaler. Set by
    #: ``set_precision``; a dynamics whose updates all go through ``backward``/``update`` supports fp16.
    precision = "fp32"
    scalers = None
    #: ``train.compile``'s value for ``compile_steps``: true, or reduce-overhead (CUDA graphs). Set by train.bind_game.
    compile_mode = True
    supports_fp16 = False

    def __post_init__(self) -> None:
        if not self.instance_noise >= 0:
            raise ConfigError(f"instance_noise: must be >= 0 (got {self.instance_noise})")

    def bind(self, players: Players, loss: Any, penalty: Any, n_dis: int, data: Any, batch_size: int,
             iterations: int = 1, layout: Layout = SINGLE, pack: int = 1, augment: Any = None) -> "Game":
        self.players, self.loss, self.penalty, self.n_dis = players, loss, penalty, n_dis
        self.pack = pack
        self.augment = augment if augment is not None and not augment.identity else None
        self.data, self.batch_size, self.iterations = data, batch_size, iterations
        # One run, or N replicas stacked on a leading axis (ganbench/replicas.py): the batch axis, the
        # per-run reductions and each run's random stream.
        self.layout = penalty.layout = layout
        self.d_step = 0
        self.g_step = 0  # generator steps taken; set from the checkpoint on resume
        self.device = next(players.G.parameters()).device
        self.zero = torch.zeros(layout.run_shape, device=self.device)
        # The current step's inputs as D sees them (noisy, packed), for losses and penalties that need more
        # than D's outputs.
        self.real: Optional[Tensor] = None
        self.fake: Optional[Tensor] = None
        loss.bind(self)
        penalty.bind(self)
        for name, (module, opt) in loss.players(self).items():
            players.extra[name] = module
            players.extra_opt[name] = opt
        # The configured learning rates, before a checkpoint restores (possibly decayed) ones.
        self.base_lrs = [[group["lr"] for group in opt.param_groups] for opt in self.optimizers()]
        self.setup()
        return self

    def set_precision(self, precision: str) -> None:
        """Run every step under ``train.precision`` (autocast), with fp16's loss scalers."""
        from .. import precision as amp

        if precision == "fp16" and self.layout.replicas:
            raise ConfigError("train.precision: fp16 scales each player's loss by one factor, which N replicas would "
                              "share (a step skipped for one would be skipped for all); use train.precision=bf16 "
                              "with train.replicas, or train.replicas=1")
        if precision == "fp16" and not self.supports_fp16:
            raise ConfigError(f"train.precision: fp16 needs loss scaling in every update, which dynamics={self.name} "
                              "does not have; use train.precision=bf16 (no scaling needed) or dynamics=alternating")
        self.precision = precision
        self.scalers = amp.scalers(precision, self.device)
        self.step = amp.under(precision, self.device, self.step)

    def backward(self, loss: Tensor, player: str) -> None:
        """``loss.backward()``, scaled by the player's (``"D"``, ``"G"``) loss scaler under fp16."""
        (self.scalers[player].scale(loss) if self.scalers else loss).backward()

    def update(self, player: str, *opts: torch.optim.Optimizer) -> None:
        """``opt.step()`` of each optimizer that the player's backward filled; under fp16 the player's scaler
        unscales the gradients, skips steps whose gradients are not finite, then adapts its scale once."""
        for opt in opts:
            if self.scalers:
                self.scalers[player].step(opt)
            else:
                opt.step()
        if self.scalers:
            self.scalers[player].update()

    def optimizers(self) -> List[torch.optim.Optimizer]:
        p = self.players
        return [p.opt_G, p.opt_D] + [o for o in p.extra_opt.values() if o is not None]

    def scale_lr(self, factor: float) -> None:
        """Set every optimizer's learning rate to ``factor`` × its configured value (lr schedules)."""
        for opt, bases in zip(self.optimizers(), self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor

    def setup(self) -> None:
        """Per-game preparation once the players are bound (buffers, functional copies, ...)."""

    @property
    def G(self) -> nn.Module:
        return self.players.G

    @property
    def D(self) -> nn.Module:
        return self.players.D

    def config_keys(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def step(self) -> Tensor:
        raise NotImplementedError

    def compile_steps(self) -> None:
        """``train.compile``: compile the step's D and G objectives (ganbench/compiled.py)."""
        raise ConfigError(f"train.compile: dynamics={self.name} has no compiled step (dynamics=alternating has); "
                          "use train.compile=false")

    def latent(self) -> Tensor:
        shape, device = (self.batch_size, self.G.z_dim), self.device
        return self.layout.draw(lambda g: torch.randn(shape, device=device, generator=g), device)

    def real_batch(self) -> Tensor:
        """A training batch of real samples, from each run's own stream."""
        return self.layout.draw(lambda g: self.data.sample(self.batch_size, g), self.data.sample_device)

    def noise_std(self) -> float:
        if not self.noise_anneal:
            return self.instance_noise
        return self.instance_noise * max(0.0, 1.0 - self.g_step / max(self.iterations, 1))

    def noisy(self, x: Tensor) -> Tensor:
        """D's view of an input batch of B samples: pack_m(T(x) + σ_t·ε), ε ~ N(0, I), T the augmentation
        (``augment``, drawn per sample; the identity for augment=none), B/m packed samples (ganbench/packing.py).
        The identity when augment=none, instance noise is off and pack=1.

        Every input D gets in a game step (real, fake, the generator step's fake) goes through here, so the
        penalties and losses that read ``self.real`` / ``self.fake`` see packed samples. The noise is drawn on
        the unpacked batch (the same draw as without packing: σ·ε is elementwise, so noising then packing is
        packing then noising)."""
        if self.augment is not None:
            x = self.augment(x, self.layout)
        if self.instance_noise != 0:
            x = x + self.noise_std() * self.layout.randn_like(x)
        return x if self.pack == 1 else pack(x, self.pack, self.layout.batch_dims)

    # ---- checkpoint: the players and every piece of the game's state, by name ----
    def zero_extra_grads(self) -> None:
        for opt in self.players.extra_opt.values():
            if opt is not None:
                opt.zero_grad(set_to_none=True)

    def step_extra(self) -> None:
        """The extra players' optimizer steps, on the gradients of the generator step's backward."""
        for opt in self.players.extra_opt.values():
            if opt is not None:
                opt.step()

    def state_dict(self) -> Dict[str, Any]:
        p = self.players
        state = {"G": p.G.state_dict(), "D": p.D.state_dict(), "opt_G": p.opt_G.state_dict(),
                 "opt_D": p.opt_D.state_dict(), "G_avg": p.G_avg.state_dict() if p.G_avg is not None else None,
                 "d_step": self.d_step}
        # Optional pieces appear only when a method has them, so plain runs keep their checkpoint layout.
        if p.extra:
            state["extra"] = {name: m.state_dict() for name, m in p.extra.items()}
            state["extra_opt"] = {name: o.state_dict() for name, o in p.extra_opt.items() if o is not None}
        for key, obj in (("loss_state", self.loss), ("penalty_state", self.penalty), ("game_state", self)):
            extra = obj.extra_state() if obj is self else obj.state_dict()
            if extra:
                state[key] = extra
        if self.scalers:
            state["scalers"] = {player: scaler.state_dict() for player, scaler in self.scalers.items()}
        return state

    def extra_state(self) -> Dict[str, Any]:
        """State of the game itself beyond the players (e.g. an unrolled copy); empty by default."""
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore ``extra_state``'s values."""

    def load_state_dict(self, state: Dict[str, Any], source: Any) -> None:
        p = self.players
        try:
            p.G.load_state_dict(state["G"])
            p.D.load_state_dict(state["D"])
            p.opt_G.load_state_dict(state["opt_G"])
            p.opt_D.load_state_dict(state["opt_D"])
            if p.G_avg is not None and state.get("G_avg") is not None:
                p.G_avg.load_state_dict(state["G_avg"])
            for name, module in p.extra.items():
                module.load_state_dict(state["extra"][name])
                if p.extra_opt.get(name) is not None:
                    p.extra_opt[name].load_state_dict(state["extra_opt"][name])
            if state.get("loss_state"):
                self.loss.load_state_dict(state["loss_state"])
            if state.get("penalty_state"):
                self.penalty.load_state_dict(state["penalty_state"])
            if state.get("game_state"):
                self.load_extra_state(state["game_state"])
            if self.scalers and state.get("scalers"):
                for player, scaler in self.scalers.items():
                    scaler.load_state_dict(state["scalers"][player])
            self.d_step = int(state["d_step"])
        except (RuntimeError, ValueError, KeyError, TypeError) as ex:
            first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
            raise CheckpointError(f"checkpoint {source} does not fit this model ({first}); it was left in place") from None
