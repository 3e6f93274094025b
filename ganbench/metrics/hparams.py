"""TensorBoard HParams: one run = one session in the run's own directory, so a sweep's runs line up in the
HParams dashboard next to their scalars."""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch.utils.tensorboard.summary import hparams

FINAL_TAG = "final/{}"  # scalar tag of a final metric, read by the HParams dashboard


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, float | int | str | bool]:
    """Nested mapping -> {"a.b.c": value}; lists and other non-scalars become strings, None becomes "null"."""
    out: dict = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif v is None:
            out[key] = "null"
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(list(v) if not isinstance(v, str) and hasattr(v, "__iter__") else v)
    return out


def log_hparams(writer, flat_hparams: dict, final_metrics: dict, step: int | None = None) -> None:
    """Write the HParams summaries (experiment, session start, session end) into ``writer``'s own event
    file, and each finite final metric as the scalar ``final/<name>`` that the dashboard's metric columns
    read. Unlike SummaryWriter.add_hparams this creates no sub-run. None/NaN metrics are left out (the
    dashboard shows them blank)."""
    hp = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in flat_hparams.items()}
    metrics = {FINAL_TAG.format(k): float(v) for k, v in final_metrics.items()
               if v is not None and math.isfinite(float(v))}
    exp, ssi, sei = hparams(hp, metrics)
    fw = writer._get_file_writer() if hasattr(writer, "_get_file_writer") else writer.file_writer
    for summary in (exp, ssi, sei):
        fw.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, global_step=step)
    writer.flush()
