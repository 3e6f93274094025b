"""Datasets: ``build_dataset(dataset_cfg, device, seed)`` dispatches on ``dataset_cfg.name``.

Every dataset exposes ``.kind`` ("points" | "image"), ``.shape``, ``.name`` and
``.sample(batch_size)`` (a float32 batch on the device, drawn with torch's global
RNG on that device, no host sync). Points datasets add ``.centers``, ``.std`` and
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


def build_dataset(dataset_cfg, device: torch.device | str, seed: int):
    """Build the dataset named ``dataset_cfg.name`` on ``device``; ``seed`` fixes any
    sample drawn at build time (e.g. stacked MNIST's reference set), not training batches."""
    name = dataset_cfg.get("name")
    if name not in _BUILDERS:
        raise ConfigError(f"unknown dataset.name={name!r}; choose one of {', '.join(DATASET_NAMES)}")
    module_name, fn_name = _BUILDERS[name].split(":")
    builder = getattr(importlib.import_module(module_name), fn_name)
    return builder(dataset_cfg, torch.device(device), int(seed))
