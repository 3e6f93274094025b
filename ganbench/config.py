"""Config schemas (structured configs) and validation.

Hydra composes ``conf/``; ``validate`` then checks every node against a dataclass schema, so that an
unknown key, a wrong type or an out-of-range value becomes one ConfigError line naming the key.
"""
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, unknown_key_message
from .schema import _first_line, at_least_one, positive, resolved, structured

@dataclass
class TrainConfig:
    """``train``: the schedule of one run. Steps count generator updates."""

    iterations: int = 100_000
    batch_size: int = 64
    log_every: int = 100
    sample_every: int = 1000
    ckpt_every: int = 1000
    sample_grid: int = 64  # fixed-z samples in the image grid (and points ×40 in the 2-D scatter)
    # Averaged generator weights (DRAGAN paper §2.2): none, ema (θ̄ ← βθ̄ + (1-β)θ) or uniform (θ̄_T = mean θ_t).
    g_average: str = "none"
    ema_beta: float = 0.999
    progress: bool = True  # tqdm bar with it/s, ETA and losses; off: a log line per log step instead
    # Learning-rate schedule of every player: none (constant), or linear: constant for the first
    # lr_decay_start × iterations generator steps, then linearly to 0 at the last step.
    lr_decay: str = "none"
    lr_decay_start: float = 0.5
    # Train seeds seed .. seed+replicas-1 together in one process, each writing its own run directory
    # (ganbench/replicas.py); 1 = one run.
    replicas: int = 1
    # torch.compile the D and G steps, gradient penalties included (ganbench/compiled.py); off by default:
    # compiling costs tens of seconds, which pays only for long runs.
    compile: Any = False  # false, true, or reduce-overhead (true plus CUDA graphs: Inductor's triton.cudagraphs)
    # CUDA matrix products and convolutions in TensorFloat-32 (10-bit mantissa inputs, fp32 accumulation): on by
    # default, as PyTorch's own cuDNN default and NVIDIA's recipes; false for IEEE fp32 products. CUDA only.
    tf32: bool = True
    # Reproducible GPU runs: cuDNN's deterministic algorithms and no autotuning (cudnn.benchmark off). Off by
    # default: autotuned convolutions are faster. On the CPU runs are deterministic either way.
    deterministic: bool = False
    # Image networks in NHWC memory (torch.channels_last; batches follow from the first convolution): faster
    # convolutions on tensor cores. Images only.
    channels_last: bool = False
    # The step's arithmetic (ganbench/precision.py): fp32, bf16 (autocast) or fp16 (autocast + loss scaling;
    # dynamics=alternating).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        at_least_one(replicas=self.replicas)
        at_least_one(iterations=self.iterations, batch_size=self.batch_size, log_every=self.log_every,
                     sample_every=self.sample_every, ckpt_every=self.ckpt_every, sample_grid=self.sample_grid)
        if self.g_average not in ("none", "ema", "uniform"):
            raise ConfigError(f"g_average: unknown option '{self.g_average}'; allowed: none, ema, uniform")
        if not 0 < self.ema_beta < 1:
            raise ConfigError(f"ema_beta: must be in (0, 1) (got {self.ema_beta})")
        if self.lr_decay not in ("none", "linear"):
            raise ConfigError(f"lr_decay: unknown option '{self.lr_decay}'; allowed: none, linear")
        if not 0 <= self.lr_decay_start < 1:
            raise ConfigError(f"lr_decay_start: must be in [0, 1) (got {self.lr_decay_start})")
        if self.compile not in (False, True, "reduce-overhead") or isinstance(self.compile, (int, float)) and \
                not isinstance(self.compile, bool):
            raise ConfigError(f"compile: must be false, true or reduce-overhead (got {self.compile!r})")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision: unknown option '{self.precision}'; allowed: fp32, bf16, fp16")


@dataclass
class ObjectiveCommon:
    """The keys every ``conf/objective/*.yaml`` has; loss-specific keys come from the loss class."""

    name: str = "?"
    loss: str = "nonsaturating"
    n_dis: int = 1  # discriminator steps per generator step
    lr: float = 2e-4  # the recipe's learning rate (both players), used by conf/optimizer/*.yaml
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])  # the recipe's Adam betas

    def __post_init__(self) -> None:
        at_least_one(n_dis=self.n_dis)
        positive(lr=self.lr)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas: must be two numbers in [0, 1) (got {list(self.betas)})")


def check_kernels(foreach: Optional[bool], fused: Optional[bool]) -> None:
    if foreach and fused:
        raise ConfigError("fused: fused=true and foreach=true are two kernels for one step; choose one")


@dataclass
class AdamConfig:
    lr: float = 2e-4
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    # The update's kernel (torch.optim): null = torch's choice (foreach on the GPU), true/false to force it;
    # fused = one kernel for all parameters (CPU and CUDA).
    foreach: Optional[bool] = None
    fused: Optional[bool] = None

    def __post_init__(self) -> None:
        check_kernels(self.foreach, self.fused)
        positive(lr=self.lr, eps=self.eps)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas: must be two numbers in [0, 1) (got {list(self.betas)})")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: must be >= 0 (got {self.weight_decay})")


@dataclass
class RMSpropConfig:
    lr: float = 5e-5
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0
    foreach: Optional[bool] = None  # null = torch's choice (torch has no fused RMSprop)

    def __post_init__(self) -> None:
        positive(lr=self.lr, eps=self.eps)
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"alpha: must be in [0, 1) (got {self.alpha})")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("momentum and weight_decay: must be >= 0")


@dataclass
class SGDConfig:
    lr: float = 1e-2
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    foreach: Optional[bool] = None
    fused: Optional[bool] = None

    def __post_init__(self) -> None:
        check_kernels(self.foreach, self.fused)
        positive(lr=self.lr)
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("momentum and weight_decay: must be >= 0")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov: needs momentum > 0")


OPTIMIZERS = {"adam": AdamConfig, "rmsprop": RMSpropConfig, "sgd": SGDConfig}
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
TASKS = ("gan", "gmm")


@dataclass
class Spec:
    """Everything the training loop needs, validated and typed."""

    train: TrainConfig
    loss: Any
    n_dis: int
    penalty: Any
    optimizer: str
    opt_g: Any
    opt_d: Any
    #: PacGAN packing (``pack``, ganbench/packing.py): D judges packs of this many samples; 1 = off.
    pack: int = 1
    #: The augmentation of D's inputs (``augment``, ganbench/augment/); None = none.
    augment: Any = None


def check_resolvable(cfg: DictConfig) -> None:
    """Every ``${...}`` outside the hydra node resolves (else a ConfigError naming the key), so that a
    broken interpolation fails here, before the run directory is written, not inside the run."""
    for key in cfg.keys():
        if key == "hydra":
            continue
        try:
            node = cfg._get_node(key)
            if isinstance(node, DictConfig):
                OmegaConf.to_container(node, resolve=True)
            else:
                cfg[key]
        except OmegaConfBaseException as err:
            inner = getattr(err, "full_key", None) or ""
            where = inner if inner.startswith(f"{key}.") or inner == key else (f"{key}.{inner}" if inner else key)
            raise ConfigError(f"{where}: cannot resolve interpolation ({_first_line(getattr(err, 'msg', None) or err)})"
                              ) from None


def check_finite(node: Any, key: str = "") -> None:
    """Every number in the config is finite. No key ganbench reads takes inf or nan to mean something (off,
    unbounded, ...): as a margin, a noise level, a weight or a rate they only turn the losses into inf/nan, or
    are silently compared as if they were numbers (``inf > 0`` holds). One check here, so that each schema's
    range checks need not repeat it. Lists are named by index (``gmm.init.mu[0]``)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{key}: must be a finite number (got {node})")
    if isinstance(node, dict):
        for k, v in node.items():
            check_finite(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_finite(v, f"{key}[{i}]")


def validate_top(cfg: DictConfig) -> None:
    """Top-level keys shared by every task, and every number of the config finite (``check_finite``)."""
    check_resolvable(cfg)
    for key in cfg.keys():
        if key != "hydra":  # Hydra's own settings (check_resolvable skips them too)
            node = cfg._get_node(key)
            check_finite(OmegaConf.to_container(node) if isinstance(node, DictConfig) else cfg[key], str(key))
    task = cfg.get("task")
    if task not in TASKS:
        raise ConfigError(f"task: unknown option '{task}'; allowed: {', '.join(TASKS)}")
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool) or cfg.seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer (got {cfg.get('seed')!r})")
    if not isinstance(cfg.get("device"), str) or not DEVICE_RE.match(cfg.device):
        raise ConfigError(f"device: must be auto, cpu, cuda, cuda:N or mps (got {cfg.get('device')!r})")
    gmm = cfg.get("gmm") if task == "gmm" else None
    # gmm.device replaces the top-level device in the GMM lab: the same names, or null for the top-level one.
    gmm_device = gmm.get("device") if isinstance(gmm, DictConfig) else None
    if gmm_device is not None and (not isinstance(gmm_device, str) or not DEVICE_RE.match(gmm_device)):
        raise ConfigError(f"gmm.device: must be null (the top-level device), auto, cpu, cuda, cuda:N or mps "
                          f"(got {gmm_device!r})")
    threads = cfg.get("threads", "auto")
    if threads != "auto" and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads: must be auto or an integer >= 1 (got {threads!r})")
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume, str):
        raise ConfigError(f"resume: must be a path to a checkpoint (got {resume!r})")
    if cfg.get("claims") is not None:   # a preset's paper claims: a malformed one fails here, not in the report
        from .report.claims import parse_all

        parse_all(resolved(cfg.claims, "claims"))


def arch_shared(keys: Any, default: Any, *, _parent_: Any) -> Any:
    """The ``gb.shared`` resolver of the arch sides' YAML files: ``${gb.shared:KEY,DEFAULT}`` in a side node
    (``arch.g`` or ``arch.d``) is the pair's ``arch.KEY`` when the pair's ``base`` family is this side's family
    (``name``) and sets KEY to a non-null value, else DEFAULT. KEY may be a list: the first non-null of them
    (``${gb.shared:[d_depth,depth],3}``). So a pair's shared keys reach only the sides of its own family:
    ``arch=dcgan arch/g=mlp`` gives an MLP G with the MLP defaults, never DCGAN's width or latent size."""
    side = _parent_
    pair = side._get_parent() if isinstance(side, DictConfig) else None
    if not isinstance(pair, DictConfig) or pair.get("base") is None or pair.get("base") != side.get("name"):
        return default
    for key in ([keys] if isinstance(keys, str) else list(keys)):
        value = pair.get(key)
        if value is not None:
            return value
    return default


#: Methods that read unpacked batches next to D's packed ones (they are refused with pack > 1, in one line):
#: losses by ``objective.loss``, penalties by name, each with the reason.
PACK_REFUSED_LOSSES = {
    "energy_based": "its autoencoder D encodes the generator's unpacked samples",
    "mode_regularized": "its encoder maps real samples to latents, one sample at a time",
    "mixture": "its payoff gives each generator its own rows of the fake batch, which packs would mix",
}
PACK_REFUSED_PENALTIES = {
    "consensus": "it adds G's graph to D's input from the generator's unpacked batch",
    "nk": "it adds G's graph to D's input from the generator's unpacked batch",
}


def check_pack(cfg: DictConfig, train: "TrainConfig", loss: Any, penalty_name: str) -> int:
    """``pack``: an integer m >= 1, with a method that can see packed batches. Any m fits any train.batch_size:
    the batch counts packs (train.batch_size packs of m samples, ganbench/packing.py)."""
    m = cfg.get("pack", 1)
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ConfigError(f"pack: must be an integer >= 1 (1 = no packing; got {m!r})")
    if m == 1:
        return m
    loss_name = getattr(loss, "name", None)
    if loss_name == "mixture" and getattr(loss, "k", 1) == 1:
        loss_name = None  # k=1 is the plain base loss
    why = PACK_REFUSED_LOSSES.get(loss_name)
    what = f"objective={cfg.objective.get('name')} (loss {loss_name})"
    if why is None:
        why, what = PACK_REFUSED_PENALTIES.get(penalty_name), f"penalty={penalty_name}"
    if why is not None:
        raise ConfigError(f"pack: {what} does not work with packing ({why}); use pack=1 or another method")
    return m


def validate(cfg: DictConfig) -> Spec:
    """Check the whole GAN config; return the typed pieces. Raises ConfigError (one line) on bad input."""
    from .objectives import LOSSES
    from .penalties import PENALTIES

    validate_top(cfg)
    train = structured(TrainConfig, cfg.train, "train")

    obj = resolved(cfg.objective, "objective")
    common_keys = {f.name for f in dataclasses.fields(ObjectiveCommon)}
    loss_name = obj.get("loss")
    if loss_name not in LOSSES:
        raise ConfigError(f"objective.loss: unknown loss '{loss_name}'; allowed: {', '.join(LOSSES)}")
    loss_cls = LOSSES[loss_name]
    loss_keys = {f.name for f in dataclasses.fields(loss_cls)}
    unknown = [k for k in obj if k not in common_keys | loss_keys]
    if unknown:
        raise ConfigError(unknown_key_message(f"objective.{unknown[0]}", sorted(common_keys | loss_keys)))
    common = structured(ObjectiveCommon, {k: v for k, v in obj.items() if k in common_keys}, "objective")
    loss = structured(loss_cls, {k: v for k, v in obj.items() if k in loss_keys}, "objective")

    pen = resolved(cfg.penalty, "penalty")
    pen_name = pen.pop("name", None)
    if pen_name not in PENALTIES:
        raise ConfigError(f"penalty.name: unknown penalty '{pen_name}'; allowed: {', '.join(PENALTIES)}")
    penalty = structured(PENALTIES[pen_name], pen, "penalty")

    opt = resolved(cfg.optimizer, "optimizer")
    opt_name = opt.get("name")
    if opt_name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name: unknown optimizer '{opt_name}'; allowed: {', '.join(OPTIMIZERS)}")
    extra = [k for k in opt if k not in ("name", "g", "d")]
    if extra:
        raise ConfigError(unknown_key_message(f"optimizer.{extra[0]}", ["name", "g", "d"]))
    opt_g = structured(OPTIMIZERS[opt_name], opt.get("g"), "optimizer.g")
    opt_d = structured(OPTIMIZERS[opt_name], opt.get("d"), "optimizer.d")

    from .archs import check_fits

    pack = check_pack(cfg, train, loss, pen_name)
    check_fits(cfg.arch, cfg.dataset, pack, penalty.gradient_penalty)
    from .augment import build_augment

    augment = build_augment(cfg.get("augment"))
    if not augment.identity and cfg.dataset.get("kind") != "image":
        raise ConfigError(f"augment: augment={augment.name} transforms images; dataset={cfg.dataset.get('name')} "
                          "holds 2-D points: use augment=none")
    if train.channels_last and cfg.dataset.get("kind") != "image":
        raise ConfigError(f"train.channels_last: a memory layout of images; dataset={cfg.dataset.get('name')} holds "
                          "2-D points: use train.channels_last=false")
    spec = Spec(train=train, loss=loss, n_dis=common.n_dis, penalty=penalty, optimizer=opt_name,
                opt_g=opt_g, opt_d=opt_d, pack=pack, augment=augment)
    if train.replicas > 1 and cfg.get("resume"):
        raise ConfigError("resume: train.replicas continues each seed from its own run directory; resume=<path> "
                          "names one checkpoint: drop resume= (or use train.replicas=1)")
    return spec
