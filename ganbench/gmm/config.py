"""The ``gmm`` config node: a typed schema and its validation (bad values raise ConfigError naming the key)."""
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .dynamics import METHODS, UNROLL_GRADS

MODES = ("heatmap", "trajectory")
DTYPES = ("float32", "float64")
COMPILE = ("auto", "true", "false")
BACKENDS = ("auto", "native", "torch")


@dataclass
class InitConfig:
    """Trajectory start; the heatmap ignores it (it uses a grid of μ̂ and random discriminators)."""

    mu: List[float] = field(default_factory=lambda: [-1.0, 2.5])
    l: List[float] = field(default_factory=lambda: [-1.0, 1.0])   # (ℓ₁, ℓ₂)
    r: List[float] = field(default_factory=lambda: [0.2, 2.5])    # (r₁, r₂)


@dataclass
class GMMConfig:
    mode: str = "heatmap"
    methods: List[str] = field(default_factory=lambda: ["first_order", "unrolled", "optimal"])
    target_mu: List[float] = field(default_factory=lambda: [-0.5, 0.5])
    lr: float = 0.3
    unroll: int = 5
    unroll_grad: str = "analytic"
    iterations: int = 3000
    grid: int = 21
    grid_range: List[float] = field(default_factory=lambda: [-1.0, 1.0])
    inits: int = 120
    init_range: List[float] = field(default_factory=lambda: [-3.0, 3.0])
    init: InitConfig = field(default_factory=InitConfig)
    success_tv: float = 0.1
    collapsed_is_failure: bool = True
    mode_collapse_tol: float = 0.1
    vanishing_grad_tol: float = 1e-3
    dtype: str = "float64"
    device: Optional[str] = None
    compile: str = "auto"
    backend: str = "auto"
    chunk: int = 8192
    plot_steps: List[int] = field(default_factory=lambda: [0, 100, 1000, 3000])
    d_only_steps: int = 1000
    log_every: int = 10


def _check(condition: bool, key: str, rule: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"gmm.{key}: {rule} (got {value!r})")


def _one_of(key: str, value: Any, allowed) -> None:
    _check(value in allowed, key, f"unknown option; allowed: {', '.join(allowed)}", value)


def _pair(key: str, value: List[float], ordered: bool = False) -> None:
    _check(len(value) == 2, key, "must be a list of two numbers", list(value))
    if ordered:
        _check(value[0] < value[1], key, "must be [low, high] with low < high", list(value))


def validate(node: Optional[DictConfig]) -> GMMConfig:
    """Merge ``cfg.gmm`` onto the schema (types, unknown keys) and check ranges and options."""
    if node is None:
        raise ConfigError("gmm: missing; use experiment=gmm_heatmap or experiment=gmm_trajectory")
    schema = OmegaConf.structured(GMMConfig)
    try:
        merged = OmegaConf.merge(schema, node)
    except Exception as ex:  # omegaconf's ValidationError / ConfigKeyError: name the key, one line
        key = getattr(ex, "full_key", None) or ""
        reason = str(ex).strip().splitlines()[0]
        raise ConfigError(f"gmm.{key}: {reason}" if key else f"gmm: {reason}") from None
    spec: GMMConfig = OmegaConf.to_object(merged)

    _one_of("mode", spec.mode, MODES)
    _check(len(spec.methods) > 0, "methods", "must name at least one method", spec.methods)
    for method in spec.methods:
        _one_of("methods", method, METHODS)
    _check(len(set(spec.methods)) == len(spec.methods), "methods", "must not repeat a method", spec.methods)
    _pair("target_mu", spec.target_mu)
    _check(spec.lr > 0, "lr", "must be > 0", spec.lr)
    _check(spec.unroll >= 1, "unroll", "must be >= 1", spec.unroll)
    _one_of("unroll_grad", spec.unroll_grad, UNROLL_GRADS)
    _check(spec.iterations >= 1, "iterations", "must be >= 1", spec.iterations)
    _check(spec.grid >= 1, "grid", "must be >= 1", spec.grid)
    _pair("grid_range", spec.grid_range, ordered=spec.grid > 1)
    _check(spec.inits >= 1, "inits", "must be >= 1", spec.inits)
    _pair("init_range", spec.init_range, ordered=True)
    _pair("init.mu", spec.init.mu)
    _pair("init.l", spec.init.l)
    _pair("init.r", spec.init.r)
    (l1, l2), (r1, r2) = spec.init.l, spec.init.r
    _check(l1 <= r1 <= l2 <= r2, "init", "the discriminator must satisfy l1 <= r1 <= l2 <= r2",
           {"l": list(spec.init.l), "r": list(spec.init.r)})
    _check(0 < spec.success_tv < 1, "success_tv", "must be in (0, 1)", spec.success_tv)
    _check(spec.mode_collapse_tol >= 0, "mode_collapse_tol", "must be >= 0", spec.mode_collapse_tol)
    _check(spec.vanishing_grad_tol >= 0, "vanishing_grad_tol", "must be >= 0", spec.vanishing_grad_tol)
    _one_of("dtype", spec.dtype, DTYPES)
    _one_of("compile", str(spec.compile).lower(), COMPILE)
    spec.compile = str(spec.compile).lower()
    _one_of("backend", spec.backend, BACKENDS)
    _check(spec.chunk >= 1, "chunk", "must be >= 1", spec.chunk)
    for s in spec.plot_steps:
        _check(s >= 0, "plot_steps", "steps must be >= 0", list(spec.plot_steps))
    # Steps past the end are shown at the last step, so that a shortened run needs no second override.
    spec.plot_steps = sorted({min(s, spec.iterations) for s in spec.plot_steps})
    _check(spec.d_only_steps >= 0, "d_only_steps", "must be >= 0", spec.d_only_steps)
    _check(spec.log_every >= 1, "log_every", "must be >= 1", spec.log_every)
    return spec


def keys() -> List[str]:
    """Every gmm.* key (for docs and tests)."""
    return [f.name for f in fields(GMMConfig)]
