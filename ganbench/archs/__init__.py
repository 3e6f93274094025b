"""Generator and discriminator families; ``conf/arch/`` configures them.

An architecture is a pair of two independently chosen sides, G (``arch.g``) and D (``arch.d``), each a family
(``name``) with its own keys: ``conf/arch/g/<family>.yaml`` and ``conf/arch/d/<family>.yaml``, whose schemas
are each family module's ``GConfig`` and ``DConfig``. Families: dcgan, mlp, resnet (the WGAN-GP CIFAR-10
ResNet), sngan (the SNGAN standard CNN) and bogonet (a network drawn at random from the other three, DRAGAN paper §5.3). Each module exposes
``generator(cfg, shape)``, ``discriminator(cfg, shape)`` and ``fit_error(cfg, shape)`` (why a side cannot take
samples of ``shape``, or None).

A pair (``conf/arch/<name>.yaml``: ``arch=dcgan``, ``arch=dcgan_mlp_g``, ...) chooses both sides and holds the
keys they share: a pair whose ``base`` is family F has the keys of F's ``PairConfig`` (``arch.width``,
``arch.d_norm``, ...), and every side of family F reads them through ``${gb.shared:KEY,DEFAULT}``
(ganbench/config.py) unless that side's own key is given. So ``arch=dcgan arch.width=32`` sets both sides,
``arch.g.width=32`` G's alone, and ``arch=dcgan arch/g=mlp`` swaps G for an MLP (which reads no DCGAN keys).
A flat node without ``g``/``d`` (the form before sides existed) is read as its family's pair.
"""
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..schema import resolved, structured
from ..errors import ConfigError
from . import bogonet, dcgan, mlp, resnet, sngan

log = logging.getLogger(__name__)

FAMILIES = {"dcgan": dcgan, "mlp": mlp, "resnet": resnet, "sngan": sngan, "bogonet": bogonet}
SIDES = (("g", "G"), ("d", "D"))
PAIR_RESERVED = ("name", "base", "g", "d")


@dataclass
class ArchSpec:
    """The validated arch: the pair's name and each side's typed config (a family's GConfig / DConfig)."""

    name: str
    g: Any
    d: Any


@dataclass
class Built:
    """The concrete sides for a data shape: BogoNet sides drawn, D's ``norm: auto`` resolved. ``drawn``: per
    side drawn by BogoNet, {"seed", "attempt"}."""

    name: str
    g: Any
    d: Any
    drawn: Dict[str, Dict[str, int]] = field(default_factory=dict)


def _side_schema(family: str, side: str):
    module = FAMILIES[family]
    return module.GConfig if side == "g" else module.DConfig


def arch_config(node: Any) -> ArchSpec:
    """The validated, typed arch config (one-line ConfigError naming the key otherwise)."""
    if not isinstance(node, DictConfig):
        node = OmegaConf.create(node)
    if "g" not in node and "d" not in node:
        name = node.get("name")
        if name not in FAMILIES:
            raise ConfigError(f"arch: unknown option '{name}'; allowed: {', '.join(FAMILIES)}")
        g, d = structured(FAMILIES[name].PairConfig, node, "arch").sides()
        return ArchSpec(name, g, d)
    plain = resolved(node, "arch")
    for side, _ in SIDES:
        if not isinstance(plain.get(side), dict):
            raise ConfigError(f"arch.{side}: missing; an arch has a G side (arch/g=...) and a D side (arch/d=...), "
                              f"each one of {', '.join(FAMILIES)}")
    base = plain.get("base")
    pair = {k: v for k, v in plain.items() if k not in ("g", "d", "base")}
    if base is None:
        extra = [k for k in pair if k != "name"]
        if extra:
            raise ConfigError(f"arch.{extra[0]}: unknown key; a pair without a base family has no shared keys "
                              "(set the sides' keys: arch.g.*, arch.d.*)")
    elif base not in FAMILIES:
        raise ConfigError(f"arch.base: unknown family '{base}'; allowed: null, {', '.join(FAMILIES)}")
    else:
        structured(FAMILIES[base].PairConfig, pair, "arch")  # the shared keys, named as arch.<key>
    sides = {}
    for side, _ in SIDES:
        family = plain[side].get("name")
        if family not in FAMILIES:
            raise ConfigError(f"arch.{side}.name: unknown family '{family}'; allowed: {', '.join(FAMILIES)} "
                              f"(choose one with arch/{side}=<family>)")
        sides[side] = structured(_side_schema(family, side), plain[side], f"arch.{side}")
    return ArchSpec(str(pair.get("name", "?")), sides["g"], sides["d"])


def _shape_words(shape: Tuple[int, ...]) -> str:
    return f"{shape[0]}-D points" if len(shape) == 1 else f"images of shape {tuple(shape)}"


def concrete(spec: ArchSpec, shape: Tuple[int, ...], d_shape: Tuple[int, ...], gradient_penalty: bool,
             data: Optional[str] = None) -> Built:
    """The sides ``build`` makes for G's samples of ``shape`` and D's inputs of ``d_shape``: BogoNet sides
    drawn (``bogonet.draw``), D's norm ``auto`` resolved (batch norm, or none with a gradient penalty or
    spectral normalisation).
    A pair that does not fit is one ConfigError naming both sides (``data`` names the dataset)."""
    out = {"g": spec.g, "d": spec.d}
    drawn = {}
    shapes = {"g": tuple(shape), "d": tuple(d_shape)}
    for side, _ in SIDES:
        if out[side].name == "bogonet":
            out[side], attempt = bogonet.draw(out[side], side, shapes[side])
            drawn[side] = {"seed": spec.g.seed if side == "g" else spec.d.seed, "attempt": attempt}
    errors = [(label, FAMILIES[out[side].name].fit_error(out[side], shapes[side])) for side, label in SIDES]
    if any(err for _, err in errors):
        what = data or _shape_words(shapes["g"])
        reasons = "; ".join(f"{label}: {err or 'fits'}" for label, err in errors)
        raise ConfigError(f"arch={spec.name} (G: {spec.g.name}, D: {spec.d.name}) does not fit {what}: {reasons}; "
                          "use arch=mlp, or choose sides that fit with arch/g=... arch/d=... (mlp fits any data)")
    d = out["d"]
    if getattr(d, "norm", None) == "auto":
        from dataclasses import replace

        # Spectral normalisation replaces batch norm in D, as in every discriminator of Miyato et al. 2018.
        plain = gradient_penalty or getattr(d, "spectral_norm", False)
        d = out["d"] = replace(d, norm="none" if plain else "batch")
    if gradient_penalty and getattr(d, "minibatch_discrimination", 0):
        # Refused, not warned (unlike batch norm): o(x_i) sums over the whole batch, so ∇ₓ of ΣD(x_i)
        # is not the per-sample gradient the penalty means, and no published setting pairs the two.
        raise ConfigError("arch.minibatch_discrimination: couples the samples of a batch, which a gradient penalty "
                          "cannot be applied to; set arch.minibatch_discrimination=0 or use a penalty that is not "
                          "on ∇ₓD (none, weight_clip, historical)")
    return Built(spec.name, out["g"], d, drawn)


def build(node: Any, shape: Tuple[int, ...], gradient_penalty: bool,
          d_shape: Optional[Tuple[int, ...]] = None) -> Tuple[nn.Module, nn.Module]:
    """G for data of ``shape`` ((C,H,W) images or (d,) points) and D for inputs of ``d_shape`` (default
    ``shape``; with PacGAN packing m samples, the packed shape (m·C,H,W) or (m·d,): ganbench/packing.py).
    G has ``.z_dim``."""
    d_shape = tuple(shape) if d_shape is None else tuple(d_shape)
    sides = concrete(arch_config(node), tuple(shape), d_shape, gradient_penalty)
    if gradient_penalty and getattr(sides.d, "norm", None) == "batch":
        log.warning(
            "D has batch norm (arch.d.norm=batch) with a gradient penalty: batch norm couples the samples of a "
            "batch, so the per-sample input gradients the penalty constrains are not those of D(x); use none or layer"
        )
    G = FAMILIES[sides.g.name].generator(sides.g, tuple(shape))
    D = FAMILIES[sides.d.name].discriminator(sides.d, d_shape)
    return G, D


def describe(node: Any, shape: Tuple[int, ...], gradient_penalty: bool,
             d_shape: Optional[Tuple[int, ...]] = None) -> Dict[str, Any]:
    """What ``build`` makes, as plain values: {"name": the pair, "g": {family keys}, "d": {...}}; a side drawn
    by BogoNet also has "drawn": {"seed", "attempt"} (results.json, TensorBoard, train.log)."""
    d_shape = tuple(shape) if d_shape is None else tuple(d_shape)
    sides = concrete(arch_config(node), tuple(shape), d_shape, gradient_penalty)
    out: Dict[str, Any] = {"name": sides.name}
    for side, _ in SIDES:
        entry = asdict(getattr(sides, side))
        if side in sides.drawn:
            entry["drawn"] = dict(sides.drawn[side], by="bogonet")
        out[side] = entry
    return out


def one_line(description: Dict[str, Any]) -> str:
    """``G: dcgan(width=64, ...); D: mlp(depth=4, ...)``: a description on one log line."""
    parts = []
    for side, label in SIDES:
        entry = dict(description[side])
        name, drawn = entry.pop("name"), entry.pop("drawn", None)
        keys = ", ".join(f"{k}={v}" for k, v in entry.items())
        how = f" [drawn by bogonet, arch.seed={drawn['seed']}, attempt {drawn['attempt']}]" if drawn else ""
        parts.append(f"{label}: {name}({keys}){how}")
    return f"arch={description['name']}: " + "; ".join(parts)


def data_shape(dataset: Any) -> Optional[Tuple[int, ...]]:
    """A sample's shape from the dataset config alone (no data read), or None when it is not yet valid:
    (2,) for the 2-D point sets, (channels, resolution, resolution) for images (3 channels unless set)."""
    kind = dataset.get("kind")
    if kind == "points":
        return (2,)
    resolution, channels = dataset.get("resolution"), dataset.get("channels", 3)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (resolution, channels))
    return (channels, resolution, resolution) if kind == "image" and ok else None


def check_fits(node: Any, dataset: Any, pack: int, gradient_penalty: bool) -> None:
    """The arch fits the dataset (before anything is written): a one-line ConfigError naming both sides."""
    from ..packing import packed_shape

    spec = arch_config(node)
    shape = data_shape(dataset)
    if shape is None:
        return
    what = f"dataset={dataset.get('name')} ({_shape_words(shape)})"
    concrete(spec, shape, packed_shape(shape, pack), gradient_penalty, data=what)
