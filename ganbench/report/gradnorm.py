"""The gradient-norm figure (DRAGAN paper, Figure 1): per group of runs, each run's ``grad/D_real_norm``
(TensorBoard scalar: mean ‖∇ₓD(x)‖ at real points, logged every ``train.log_every`` steps) against generator
steps, with the run's mode metric (modes, stacked_modes, mnist_is or is_mean: the first it has, from
metrics.jsonl) on a second y axis, so that a spike of the norm can be seen next to a collapse of the modes.
One PNG per group, ``figures/grad_norm_<group>.png``, a panel per run (seed).

The paper plots the squared norm; ganbench logs the norm (its square shows the same spikes, squared).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Tuple

from ganbench.report.figures import Figure
from ganbench.report.tables import metric_bounds

TAG = "grad/D_real_norm"
MODE_METRICS = ("modes", "stacked_modes", "mnist_is", "is_mean", "hq_pct")
MAX_PANELS = 12   # seeds drawn per group figure; more are listed as left out


def grad_norm_series(run_dir: Path) -> Tuple[List[float], List[float]]:
    """(steps, values) of the run's TensorBoard ``grad/D_real_norm``, as TensorBoard reads it (a resumed
    run's purged steps dropped); ([], []) without event files or without the tag."""
    if not any(Path(run_dir).glob("events.out.tfevents.*")):
        return [], []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    # Only the scalars are needed: keep one image/tensor each instead of every sample grid.
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1,
                                                       "histograms": 1, "audio": 1, "compressedHistograms": 1})
    acc.Reload()
    if TAG not in acc.Tags().get("scalars", []):
        return [], []
    events = acc.Scalars(TAG)
    return [float(e.step) for e in events], [float(e.value) for e in events]


def mode_metric(run) -> Optional[str]:
    names = set(run.metric_names())
    for m in MODE_METRICS:
        if m in names and run.series(m)[0]:
            return m
    return None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text)[:120] or "all"


def plot_grad_norm(out_dir: Path, groups, unreadable: Optional[List[str]] = None) -> list:
    """Write figures/grad_norm_<group>.png for every group with a run that logged the norm; returns the
    report's Figure records. A run whose event files cannot be read (OSError) gets no panel; given a list
    ``unreadable``, a line saying so is appended to it instead of raising."""

    todo = []
    for g in groups:
        per_run = []
        for r in g.runs:
            try:
                per_run.append((r, grad_norm_series(r.path)))
            except OSError as err:
                if unreadable is None:
                    raise
                name = os.fsdecode(err.filename) if err.filename is not None else f"{r.path}/events.out.tfevents.*"
                unreadable.append(f"{name}: cannot be read ({err.strerror or type(err).__name__}); no "
                                  f"gradient-norm panel for this run")
        per_run = [(r, s) for r, s in per_run if s[0]]
        if per_run:
            todo.append((g, per_run))
    if not todo:
        return []
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for g, per_run in todo:
        shown, left = per_run[:MAX_PANELS], per_run[MAX_PANELS:]
        fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.6 * len(shown) + 0.6), squeeze=False, sharex=True)
        notes: List[str] = []
        for ax, (run, (steps, norms)) in zip(axes[:, 0], shown):
            # A single logged value (a run shorter than 2·train.log_every) is a line of no length: mark the points.
            ax.plot(steps, norms, color="tab:red", linewidth=1.2, label=f"{TAG} (TensorBoard)",
                    marker="o" if len(steps) == 1 else None, markersize=4)
            ax.set_ylabel("‖∇ₓD(x)‖ at real x", color="tab:red", fontsize=8)
            ax.tick_params(axis="y", labelcolor="tab:red", labelsize=7)
            ax.grid(alpha=0.3)
            title = f"seed={run.label_value('seed')} ({run.status})"
            m = mode_metric(run)
            if m is not None:
                ms, _, mv = run.series(m)
                ax2 = ax.twinx()
                ax2.plot(ms, mv, color="tab:blue", marker="o", markersize=3, linewidth=1.2, label=m)
                ax2.set_ylabel(m, color="tab:blue", fontsize=8)
                ax2.tick_params(axis="y", labelcolor="tab:blue", labelsize=7)
                # The metric's own range (modes 0..number of modes, mnist_is 1..10, ...), no offset notation:
                # autoscaling would blow a flat collapsed curve (1 ± 1e-6) up to full height.
                ax2.ticklabel_format(axis="y", useOffset=False, style="plain")
                lo, hi = metric_bounds(m, [run])
                top = max(mv) if hi is None else hi
                bottom = min(mv) if lo is None else lo
                pad = 0.05 * (top - bottom) if top > bottom else 1.0
                ax2.set_ylim(bottom - pad, top + pad)
            else:
                notes.append(f"seed={run.seed}: no mode metric ({', '.join(MODE_METRICS)}) in metrics.jsonl")
                title += ", no mode metric"
            ax.set_title(title, fontsize=8)
        axes[-1, 0].set_xlabel("generator steps")
        if left:
            notes.append(f"{len(left)} more run(s) not drawn (at most {MAX_PANELS} panels): "
                         + ", ".join(f"seed={r.seed}" for r, _ in left))
        fig.suptitle(f"{g.label}: gradient norm at real data (red) and mode metric (blue)", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"grad_norm_{_safe(g.label)}.png"
        fig.savefig(path, dpi=100, metadata={"Title": f"{TAG} and mode metric: {g.label}",
                                             "Description": "\n".join([f"{TAG} vs generator steps (red, left axis); "
                                                                       "mode metric from metrics.jsonl (blue, right axis)",
                                                                       *notes])})
        plt.close(fig)
        written.append(Figure(path, [TAG], notes))
    return written


__all__ = ["TAG", "MODE_METRICS", "grad_norm_series", "mode_metric", "plot_grad_norm"]
