"""TensorBoard HParams: one run = one session in the run's own directory, so a sweep's runs line up in the
HParams dashboard next to their scalars."""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch.utils.tensorboard.summary import hparams

# Scalar tag of a final metric, read by the HParams dashboard's metric columns. TensorBoard's Scalars tab sorts
# tag groups (the part before "/") by character code and opens its first two: "results" sorts after every
# curve's group (D, grad, images, loss, metrics, perf), so the tab opens on curves, not on one-point charts.
FINAL_TAG = "results/{}"


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


def varied_keys(swept: list[str], flat_keys: list[str]) -> list[str]:
    """The flattened hparams a sweep varies: a swept group (``objective``) is its ``objective.name``, a
    swept key (``penalty.lambda_``, ``seed``) itself; unknown keys are dropped."""
    out: list[str] = []
    for key in swept:
        key = key.lstrip("+~")
        for candidate in (key, f"{key}.name"):
            if candidate in flat_keys and candidate not in out:
                out.append(candidate)
                break
    return out


def log_hparams(writer, flat_hparams: dict, final_metrics: dict, step: int | None = None,
                varied: list[str] | None = None) -> None:
    """Write the HParams summaries (experiment, session start, session end) into ``writer``'s own event
    file, and each finite final metric as the scalar ``results/<name>`` that the dashboard's metric columns
    read. Unlike SummaryWriter.add_hparams this creates no sub-run. None/NaN metrics are left out (the
    dashboard shows them blank).

    TensorBoard lists an experiment's hparams sorted by (not ``differs``, name) and shows the first few:
    the ``varied`` keys (what a sweep varies) lead and are marked as differing, so that the dashboard
    opens on them rather than on constant ``arch.*`` columns. The metric columns are the final metrics.
    """
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    varied = [k for k in (varied or []) if k in flat_hparams]
    order = varied + [k for k in flat_hparams if k not in varied]
    hp = {k: (flat_hparams[k] if isinstance(flat_hparams[k], (bool, int, float, str)) else str(flat_hparams[k]))
          for k in order}
    metrics = {FINAL_TAG.format(k): float(v) for k, v in final_metrics.items()
               if v is not None and math.isfinite(float(v))}
    exp, ssi, sei = hparams(hp, metrics)
    data = HParamsPluginData.FromString(exp.value[0].metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in varied
    exp.value[0].metadata.plugin_data.content = data.SerializeToString()
    fw = writer._get_file_writer() if hasattr(writer, "_get_file_writer") else writer.file_writer
    for summary in (exp, ssi, sei):
        fw.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, global_step=step)
    writer.flush()
