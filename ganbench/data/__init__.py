"""Datasets: ``build_dataset(dataset_cfg, device, seed)`` dispatches on ``dataset_cfg.name``.

Every dataset exposes ``.kind`` ("points" | "image"), ``.shape``, ``.name`` and
``.sample(batch_size, generator=None)`` (a float32 batch on the device, drawn with
torch's global RNG on ``.sample_device``, or with ``generator`` living there; no host sync). Points datasets add ``.centers``, ``.std`` and
``.sample_eval(n, generator)``; image datasets add ``.real_uint8(split)`` and
``.num_images``.
"""

from __future__ import annotations

import importlib

import torch

from ganbench.errors import ConfigError

# name -> "module:builder"; imported lazily so toy runs never import torchvision/PIL.
_BUILDERS = {
    "ring8": "ganbench.data.toy:build_ring8",
    "grid25": "ganbench.data.toy:build_grid25",
    "swissroll": "ganbench.data.toy:build_swissroll",
    "cifar10": "ganbench.data.images:build_cifar10",
    "mnist": "ganbench.data.images:build_mnist",
    "folder": "ganbench.data.images:build_folder",
    "stacked_mnist": "ganbench.data.stacked_mnist:build_stacked_mnist",
}

DATASET_NAMES = tuple(_BUILDERS)


def _resolve(name: str, prefix: str):
    if name not in _BUILDERS:
        raise ConfigError(f"unknown dataset.name={name!r}; choose one of {', '.join(DATASET_NAMES)}")
    module_name, fn_name = _BUILDERS[name].split(":")
    return getattr(importlib.import_module(module_name), fn_name.replace("build_", prefix, 1))


def validate_dataset_config(dataset_cfg) -> None:
    """Raise ConfigError (DataError for a missing dataset.path) for an invalid dataset config,
    without reading, decoding or downloading any data."""
    _resolve(dataset_cfg.get("name"), "options_")(dataset_cfg)


def uses_torchvision(dataset_cfg) -> bool:
    """Whether a run of this dataset imports torchvision: the image datasets read, show and score their images
    through it; the 2-D datasets (ganbench/data/toy.py) never import it, and run where it cannot be imported."""
    return not _BUILDERS[dataset_cfg.get("name")].startswith("ganbench.data.toy:")


def build_dataset(dataset_cfg, device: torch.device | str, seed: int):
    """Build the dataset named ``dataset_cfg.name`` on ``device``; ``seed`` is the run seed (sampling
    uses torch's global RNG, and reference sets have their own fixed seeds, so no builder needs it yet)."""
    builder = _resolve(dataset_cfg.get("name"), "build_")
    return builder(dataset_cfg, torch.device(device), int(seed))
