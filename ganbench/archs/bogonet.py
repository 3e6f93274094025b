"""BogoNet (DRAGAN paper §3.2, §5.3): a generator or discriminator drawn at random from three families,
DCGAN (p = 0.6), ResNet (0.2) and MLP (0.2), each with random variations. G and D are drawn independently
(``arch/g=bogonet`` and ``arch/d=bogonet``; ``arch=bogonet`` is both), from ``arch.seed`` only: the same
``arch.seed`` gives the same pair under every objective and every training ``seed``.

The draw of side s ∈ {g, d} is a pure function of (seed, s, the side's ranges): a ``random.Random`` seeded
with the string ``"bogonet/<seed>/<s>/<attempt>"`` (Python hashes a string seed with SHA-512: the same numbers
on every machine and Python run) makes, in this order,

1. the family, by the weights ``families`` (in the order dcgan, resnet, mlp);
2. G only: the latent size, uniformly from ``z_dims``;
3. the family's variations, each uniformly from its list:
   - dcgan: ``widths`` (w, the number of filters: G's layers have 4w, 2w, w for 32×32, D's w, 2w, 4w),
     ``kernels`` (the filter size of the stride-2 convolutions: 4 or 5), ``norms`` (batch norm on or off),
     ``activations`` (LeakyReLU or tanh, the paper's two);
   - resnet: ``dims`` (filters per layer), ``plain_blocks`` (the depth: extra residual blocks), ``norms``;
   - mlp: ``depths`` (hidden layers), then each hidden layer's width from ``widths`` (the paper: "the number of
     layers and hidden units in each layer"), ``activations``; every drawn MLP takes the weight init ``init``
     (not drawn; He by default, MLPRange).

If the drawn network cannot take the data (DCGAN or ResNet on 2-D points, or on an image side that is not a
power of two), the side is drawn again with attempt = 1, 2, ... (deterministic); the attempt that fitted is
recorded with the result. The ranges are our choice (the paper lists the variations, not their values): they
bracket the published settings of each family (DCGAN w = 64, ResNet dim = 128, the 4 × 512 MLPs of §5.2.3).
"""
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, unknown_name_message
from . import dcgan, mlp, resnet

FAMILY_ORDER = ("dcgan", "resnet", "mlp")
MAX_ATTEMPTS = 1000


def _choices(prefix: str, key: str, values: List[Any], allowed=None, minimum: Optional[int] = None) -> None:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{prefix}{key}: must be a non-empty list (got {values!r})")
    for v in values:
        if allowed is not None and v not in allowed:
            raise ConfigError(f"{prefix}{key}: unknown option '{v}'; allowed: {', '.join(map(str, allowed))}")
        if minimum is not None and (not isinstance(v, int) or isinstance(v, bool) or v < minimum):
            raise ConfigError(f"{prefix}{key}: every value must be an integer >= {minimum} (got {v!r})")


@dataclass
class DCGANRange:
    widths: List[int] = field(default_factory=lambda: [32, 64, 128])
    kernels: List[int] = field(default_factory=lambda: [4, 5])
    norms: List[str] = field(default_factory=lambda: ["batch", "none"])
    activations: List[str] = field(default_factory=lambda: ["leaky_relu", "tanh"])

    def check(self, prefix: str, side: str) -> None:
        norms = ("batch", "none") if side == "g" else ("batch", "layer", "none")
        _choices(prefix, "widths", self.widths, minimum=1)
        _choices(prefix, "kernels", self.kernels, allowed=dcgan.KERNELS)
        _choices(prefix, "norms", self.norms, allowed=norms)
        _choices(prefix, "activations", self.activations, allowed=list(dcgan.ACTIVATIONS))


@dataclass
class ResNetRange:
    dims: List[int] = field(default_factory=lambda: [128])
    plain_blocks: List[int] = field(default_factory=lambda: [0, 1, 2])
    norms: List[str] = field(default_factory=lambda: ["batch"])

    def check(self, prefix: str, side: str) -> None:
        _choices(prefix, "dims", self.dims, minimum=1)
        _choices(prefix, "plain_blocks", self.plain_blocks, minimum=0)
        _choices(prefix, "norms", self.norms, allowed=resnet.G_NORMS if side == "g" else resnet.D_NORMS)


@dataclass
class MLPRange:
    depths: List[int] = field(default_factory=lambda: [1, 2, 3, 4])
    widths: List[int] = field(default_factory=lambda: [128, 256, 512, 1024])
    activations: List[str] = field(default_factory=lambda: ["relu"])
    # Not drawn: the weight init of every drawn MLP. He variance, N(0, 2/fan_in), as both of the DRAGAN
    # authors' sources for MLPs: their MNIST notebook ("xavier_init", mlp.he_normal_init) and the WGAN-GP code
    # whose architectures §5.2.3 uses (ReLULayer / LeakyReLULayer: He-uniform). DCGAN's N(0, 0.02) (init=auto on
    # images) starts a deep MLP G collapsed: its output varies over z by ~1e-3 of a pixel (docs/reproductions.md).
    init: str = "he_normal"

    def check(self, prefix: str, side: str) -> None:
        _choices(prefix, "depths", self.depths, minimum=1)
        _choices(prefix, "widths", self.widths, minimum=1)
        _choices(prefix, "activations", self.activations, allowed=list(mlp.ACTIVATIONS))
        _choices(prefix, "init", [self.init], allowed=mlp.INITS)  # one value, checked as a list of one


def _default_families() -> Dict[str, float]:
    return {"dcgan": 0.6, "resnet": 0.2, "mlp": 0.2}


@dataclass
class _Side:
    name: str = "bogonet"
    seed: int = 0
    families: Dict[str, float] = field(default_factory=_default_families)
    dcgan: DCGANRange = field(default_factory=DCGANRange)
    resnet: ResNetRange = field(default_factory=ResNetRange)
    mlp: MLPRange = field(default_factory=MLPRange)
    # Spectral normalisation (Miyato et al. 2018) of the drawn network, whatever its family: not a variation
    # of the draw (our choice: it draws no number, so a side's draw is the same with and without it).
    spectral_norm: bool = False

    def _check(self, side: str) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed: must be an integer >= 0 (got {self.seed})")
        unknown = [k for k in self.families if k not in FAMILY_ORDER]
        if unknown:
            raise ConfigError(unknown_name_message(f"families.{unknown[0]}", FAMILY_ORDER))
        if any(not isinstance(p, (int, float)) or p < 0 for p in self.families.values()) or \
                not sum(self.families.values()) > 0:
            raise ConfigError(f"families: weights must be numbers >= 0, not all 0 (got {dict(self.families)})")
        for family in FAMILY_ORDER:
            getattr(self, family).check(f"{family}.", side)


@dataclass
class GConfig(_Side):
    """Schema of ``conf/arch/g/bogonet.yaml``."""

    z_dims: List[int] = field(default_factory=lambda: [32, 64, 100, 128])

    def __post_init__(self) -> None:
        self._check("g")
        _choices("", "z_dims", self.z_dims, minimum=1)


@dataclass
class DConfig(_Side):
    """Schema of ``conf/arch/d/bogonet.yaml``: D's own defaults where the sides differ (ResNet: the reference
    critic's 2 plain blocks and no norm, up to 4 blocks; MLP: LeakyReLU, as the §5.2.3 MLP D)."""

    resnet: ResNetRange = field(default_factory=lambda: ResNetRange(plain_blocks=[0, 1, 2, 3, 4], norms=["none"]))
    mlp: MLPRange = field(default_factory=lambda: MLPRange(activations=["leaky_relu"]))

    def __post_init__(self) -> None:
        self._check("d")


@dataclass
class BogoNetConfig:
    """Schema of the pair node ``conf/arch/bogonet.yaml``: ``seed``, read by both sides."""

    name: str = "bogonet"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed: must be an integer >= 0 (got {self.seed})")

    def sides(self) -> Tuple[GConfig, DConfig]:
        return GConfig(seed=self.seed), DConfig(seed=self.seed)


PairConfig = BogoNetConfig
FAMILY_MODULES = {"dcgan": dcgan, "resnet": resnet, "mlp": mlp}


def draw_once(cfg: _Side, side: str, attempt: int):
    """One draw of side ``side`` ("g" or "d"): the family's side config (dcgan/resnet/mlp GConfig or DConfig)."""
    rng = random.Random(f"bogonet/{cfg.seed}/{side}/{attempt}")
    names = [f for f in FAMILY_ORDER if cfg.families.get(f, 0) > 0]
    family = rng.choices(names, weights=[float(cfg.families[f]) for f in names])[0]
    z_dim = rng.choice(cfg.z_dims) if side == "g" else None
    g = side == "g"
    module = FAMILY_MODULES[family]
    schema = module.GConfig if g else module.DConfig
    if family == "dcgan":
        r = cfg.dcgan
        width, kernel, norm, act = (rng.choice(r.widths), rng.choice(r.kernels), rng.choice(r.norms),
                                    rng.choice(r.activations))
        extra = {"z_dim": z_dim} if g else {}
        return schema(width=width, kernel=kernel, norm=norm, activation=act, spectral_norm=cfg.spectral_norm, **extra)
    if family == "resnet":
        r = cfg.resnet
        dim, blocks, norm = rng.choice(r.dims), rng.choice(r.plain_blocks), rng.choice(r.norms)
        extra = {"z_dim": z_dim} if g else {}
        return schema(dim=dim, plain_blocks=blocks, norm=norm, spectral_norm=cfg.spectral_norm, **extra)
    r = cfg.mlp
    depth = rng.choice(r.depths)
    widths = [rng.choice(r.widths) for _ in range(depth)]
    act = rng.choice(r.activations)
    extra = {"z_dim": z_dim} if g else {}
    return schema(depth=depth, width=widths[0], widths=widths, activation=act, init=r.init,
                  spectral_norm=cfg.spectral_norm, **extra)


def draw(cfg: _Side, side: str, shape: Tuple[int, ...]):
    """The first draw (attempt 0, 1, ...) that fits samples of ``shape``: (side config, attempt); ConfigError
    naming the key when no draw fits in MAX_ATTEMPTS."""
    for attempt in range(MAX_ATTEMPTS):
        drawn = draw_once(cfg, side, attempt)
        if FAMILY_MODULES[drawn.name].fit_error(drawn, shape) is None:
            return drawn, attempt
    allowed = [f for f in FAMILY_ORDER if cfg.families.get(f, 0) > 0]
    raise ConfigError(f"arch.{side}.families: no BogoNet draw of {', '.join(allowed)} fits samples of shape "
                      f"{tuple(shape)} in {MAX_ATTEMPTS} draws (arch.seed={cfg.seed}); give mlp a weight, e.g. "
                      f"arch.{side}.families.mlp=0.2")


def describe_draw(cfg: _Side, attempt: int) -> Dict[str, Any]:
    return {"seed": cfg.seed, "attempt": attempt}


def ranges(cfg: _Side) -> Dict[str, Any]:
    return asdict(cfg)
