"""Generator/discriminator families; ``conf/arch/*.yaml`` configure them."""
import logging
from typing import Optional, Tuple

from omegaconf import DictConfig
from torch import nn

from ..config import structured
from ..errors import ConfigError
from . import dcgan, mlp

log = logging.getLogger(__name__)

SCHEMAS = {"dcgan": dcgan.DCGANConfig, "mlp": mlp.MLPConfig}


def arch_config(node: DictConfig):
    """The validated, typed arch config."""
    name = node.get("name")
    if name not in SCHEMAS:
        raise ConfigError(f"arch: unknown option '{name}'; allowed: {', '.join(SCHEMAS)}")
    return structured(SCHEMAS[name], node, "arch")


def build(node: DictConfig, shape: Tuple[int, ...], gradient_penalty: bool,
          d_shape: Optional[Tuple[int, ...]] = None) -> Tuple[nn.Module, nn.Module]:
    """G for data of ``shape`` ((C,H,W) images or (d,) points) and D for inputs of ``d_shape`` (default
    ``shape``; with PacGAN packing m samples, the packed shape (m·C,H,W) or (m·d,): ganbench/packing.py).
    G has ``.z_dim``."""
    cfg = arch_config(node)
    d_shape = tuple(shape) if d_shape is None else tuple(d_shape)
    if gradient_penalty and getattr(cfg, "minibatch_discrimination", 0):
        # Refused, not warned (unlike d_norm=batch): o(x_i) sums over the whole batch, so ∇ₓ of ΣD(x_i)
        # is not the per-sample gradient the penalty means, and no published setting pairs the two.
        raise ConfigError("arch.minibatch_discrimination: couples the samples of a batch, which a gradient penalty "
                          "cannot be applied to; set arch.minibatch_discrimination=0 or use a penalty that is not "
                          "on ∇ₓD (none, weight_clip, historical)")
    if isinstance(cfg, mlp.MLPConfig):
        return mlp.Generator(cfg, shape), mlp.Discriminator(cfg, d_shape)
    if len(shape) != 3:
        raise ConfigError(f"arch=dcgan needs image data (got points of shape {tuple(shape)}); use arch=mlp")
    norm = cfg.d_norm
    if norm == "auto":
        norm = "none" if gradient_penalty else "batch"
    elif norm == "batch" and gradient_penalty:
        log.warning(
            "arch.d_norm=batch with a gradient penalty: batch norm couples the samples of a batch, so the "
            "per-sample input gradients the penalty constrains are not those of D(x); use none or layer"
        )
    return dcgan.Generator(cfg, shape), dcgan.Discriminator(cfg, d_shape, norm)
