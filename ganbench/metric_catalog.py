"""Which metrics a run produces and which way each is better, without importing torch.

ganbench.metrics.evaluator computes the metrics and imports torch; the process that submits a
hyperparameter search (ganbench.sweep.search) only needs the names and directions, to check ``search.metric``
and to set the study's direction from the metric's ``higher_is_better``. Both read the tables here.
"""

from __future__ import annotations

from typing import Any, List

# Selectable groups and the metric names each produces (names as in metrics.jsonl / results.json).
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "is": ("is_mean", "is_std"),
    "fid": ("fid",),
    "kid": ("kid_mean", "kid_std"),
    "prc": ("precision", "recall"),
    "dc": ("density", "coverage"),
    "modes": ("modes", "hq_pct", "reverse_kl"),
    "energy": ("energy",),
    "stacked": ("stacked_modes", "stacked_kl"),
    "mnist_is": ("mnist_is", "mnist_is_std"),
}
HIGHER_IS_BETTER: dict[str, bool] = {
    "is_mean": True, "is_std": False, "fid": False, "kid_mean": False, "kid_std": False,
    "precision": True, "recall": True, "density": True, "coverage": True,
    "modes": True, "hq_pct": True, "reverse_kl": False, "energy": False,
    "stacked_modes": True, "stacked_kl": False, "mnist_is": True, "mnist_is_std": False,
}
# Bookkeeping fields of a metrics.jsonl row: where and with what an evaluation was made, not what it measured
# (ganbench.run.record.RunRecord.add writes them beside the metrics). ganbench-report never tabulates or plots
# them as metrics: a constant eval_samples drawn as a curve is a flat line that says nothing of the runs.
BOOKKEEPING: tuple[str, ...] = ("step", "images_seen", "wall_time_s", "eval_samples")
MIXTURE_DATASETS = ("ring8", "grid25")
POINT_DATASETS = ("ring8", "grid25", "swissroll")
# Prefixes of the averaged generator's metrics (train.g_average=ema: ema_fid; uniform: avg_fid).
AVERAGE_PREFIX = {"ema": "ema_", "uniform": "avg_"}


def auto_groups(kind: str, name: str, has_centers: bool, prc: bool) -> list[str]:
    """Default metric groups for a dataset: modes (ring8/grid25), energy (other 2-D), stacked
    (stacked_mnist), mnist_is+fid+kid (mnist: Inception's IS is meaningless on digits; the MNIST classifier
    score, the DRAGAN authors' MNIST score, is the headline), is+fid+kid otherwise, + prc/dc if asked."""
    if kind == "points":
        return ["modes"] if has_centers else ["energy"]
    if name == "stacked_mnist":
        return ["stacked"]
    groups = ["mnist_is", "fid", "kid"] if name == "mnist" else ["is", "fid", "kid"]
    return groups + (["prc", "dc"] if prc else [])


def produced_metrics(cfg: Any) -> List[str]:
    """The metric names a GAN run of ``cfg`` records in results.json: its groups' names (``metrics.names``,
    or the dataset's ``auto`` groups), then the same names with the averaged generator's prefix when
    ``train.g_average`` is ema or uniform. Unknown groups are skipped (the run's own validation names them)."""
    from omegaconf import OmegaConf

    name = OmegaConf.select(cfg, "dataset.name", default=None)
    names = OmegaConf.select(cfg, "metrics.names", default="auto")
    if names == "auto":
        kind = "points" if name in POINT_DATASETS else "image"
        groups = auto_groups(kind, str(name), name in MIXTURE_DATASETS,
                             bool(OmegaConf.select(cfg, "metrics.prc", default=False)))
    else:
        groups = [str(g) for g in (names or [])]
    out = [n for g in groups for n in METRIC_GROUPS.get(g, ())]
    prefix = AVERAGE_PREFIX.get(str(OmegaConf.select(cfg, "train.g_average", default="none")))
    return out + ([prefix + n for n in out] if prefix else [])


def higher_is_better(metric: str) -> bool:
    """The direction of ``metric`` (a name of ``produced_metrics``, prefixed names included)."""
    for prefix in AVERAGE_PREFIX.values():
        if metric.startswith(prefix) and metric[len(prefix):] in HIGHER_IS_BETTER:
            return HIGHER_IS_BETTER[metric[len(prefix):]]
    return HIGHER_IS_BETTER[metric]
