"""Evaluation metrics: IS/FID/KID (+ precision/recall, density/coverage) through torch-fidelity, mode
coverage and energy distance on the 2-D toys, Stacked-MNIST modes; the Evaluator that runs them during
training, and TensorBoard HParams logging.

    evaluator = build_evaluator(cfg, dataset, device, run_dir)
    values = evaluator.evaluate(G, step, final, z_dim)      # {name: float | None}
"""

from ganbench.metrics.evaluator import (
    HIGHER_IS_BETTER,
    METRIC_GROUPS,
    EvalSettings,
    Evaluator,
    auto_groups,
    build_evaluator,
    validate,
)
from ganbench.metrics.features import FeatureExtractor, TorchFidelityExtractor, images_to_uint8
from ganbench.metrics.hparams import flatten, log_hparams

__all__ = [
    "HIGHER_IS_BETTER", "METRIC_GROUPS", "EvalSettings", "Evaluator", "FeatureExtractor", "TorchFidelityExtractor",
    "auto_groups", "build_evaluator", "flatten", "images_to_uint8", "log_hparams", "validate",
]
