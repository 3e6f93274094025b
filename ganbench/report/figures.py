"""The report's figures: each metric against generator steps and wall-clock time, mean line per group with a
±1 sample-std band over seeds."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ganbench.report.tables import BAND_TEXT, Group, Run, clip, metric_bounds


def _mean_std_by_step(runs: Sequence[Run], metric: str):
    """Per evaluation step: mean step time, mean value and std of the value over the group's runs."""
    by_step: Dict[float, List[Tuple[float, float]]] = {}
    for run in runs:
        for s, t, v in zip(*run.series(metric)):
            by_step.setdefault(s, []).append((t, v))
    steps = sorted(by_step)
    times, means, stds = [], [], []
    for s in steps:
        ts = [t for t, _ in by_step[s] if math.isfinite(t)]
        vs = [v for _, v in by_step[s]]
        m = sum(vs) / len(vs)
        times.append(sum(ts) / len(ts) if ts else math.nan)
        means.append(m)
        stds.append(math.sqrt(sum((v - m) ** 2 for v in vs) / (len(vs) - 1)) if len(vs) > 1 else 0.0)
    return steps, times, means, stds


def band(runs: Sequence[Run], metric: str):
    """(steps, times, means, lows, highs) of a group's figure: the mean over the runs evaluated at each
    step and the band mean ± 1 sample std (0 where one run), clipped to ``metric_bounds``."""
    steps, times, means, stds = _mean_std_by_step(runs, metric)
    bounds = metric_bounds(metric, runs)
    lows = [clip(m - s, bounds) for m, s in zip(means, stds)]
    highs = [clip(m + s, bounds) for m, s in zip(means, stds)]
    return steps, times, means, lows, highs


@dataclass
class Figure:
    """A written figure and what it says besides the curves (caption notes, also in the PNG's metadata)."""

    path: Path
    legend: List[str]
    notes: List[str]


def _panel_key(groups: Sequence[Group]) -> Optional[str]:
    """Split figures by dataset when the groups span several (their metrics' scales differ)."""
    datasets = {g.runs[0].label_value("dataset") for g in groups if g.runs}
    return "dataset" if len(datasets) > 1 else None


def plot_figures(out_dir: Path, groups: Sequence[Group], metrics: Sequence[str]) -> List[Figure]:
    """One PNG per metric and x-axis (generator steps, wall-clock s): line = mean over seeds, band = mean
    ± 1 sample std over the seeds at each step, clipped to the metric's range (BAND_TEXT says so on the
    figure and in the PNG's Description metadata).

    Groups whose metric is null in every finished run get a legend entry with the reason; a figure without
    a single drawn value is not written (run_report leaves the metrics null in every run out beforehand and
    names them in one line). A group with a single evaluation per run is drawn as a marked point and the
    figure says so. When the groups cover
    several datasets, each dataset gets its own panel of the figure.
    """
    import matplotlib  # noqa: PLC0415 - figures are optional and matplotlib is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    panel_key = _panel_key(groups)
    panels: Dict[str, List[Group]] = {}
    for g in groups:
        panels.setdefault(g.runs[0].label_value(panel_key) if panel_key else "", []).append(g)
    def label(g: Group) -> str:
        return " ".join(f"{k}={v}" for k, v in g.key if k != panel_key) or g.label

    # The same group (e.g. objective=wgan) keeps its colour in every panel.
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {name: cycle[i % len(cycle)] for i, name in enumerate(sorted({label(g) for g in groups}))}
    written = []
    for metric in metrics:
        for axis, xlabel in (("step", "generator steps"), ("time", "wall-clock time (s)")):
            fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
            drew, legend, fig_notes = False, [], []
            for ax, (panel, members) in zip(axes[0], sorted(panels.items())):
                single = []
                for g in members:
                    # Runs still in progress draw too: their curve so far is informative.
                    steps, times, means, lows, highs = band(g.runs, metric)
                    if not steps:
                        if metric in g.null_reasons:
                            text = f"{label(g)}: null ({g.null_reasons[metric]})"
                            shown = text if len(text) <= 100 else text[:99] + "…"  # full text: metadata, report.md
                            ax.plot([], [], linestyle="none", marker="x", color=colors[label(g)], label=shown)
                            legend.append(text)
                        continue   # a legend entry alone does not make a figure: no blank axes
                    xs = steps if axis == "step" else times
                    one = len(steps) == 1
                    line = ax.plot(xs, means, label=label(g), color=colors[label(g)], linewidth=1.5,
                                   marker="o" if one else None)[0]
                    legend.append(label(g))
                    if one:
                        single.append(f"{label(g)} (step {steps[0]:g})")
                    if one:
                        # A band over one x has no width: the same ±1 std as an error bar.
                        ax.errorbar(xs, means, yerr=[[means[0] - lows[0]], [highs[0] - means[0]]], fmt="none",
                                    ecolor=line.get_color(), alpha=0.5, capsize=4)
                    else:
                        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
                    drew = True
                if single:
                    note = "one evaluation per run, a point not a curve: " + ", ".join(single)
                    fig_notes.append(note)
                    ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, va="bottom", wrap=True)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"{metric} (mean over seeds)")
                ax.grid(alpha=0.3)
                if panel_key:
                    ax.set_title(f"{panel_key}={panel}")
                handles, labels = ax.get_legend_handles_labels()
                if handles:
                    handles.append(Patch(color="grey", alpha=0.3, linewidth=0))
                    labels.append("band / error bar: ±1 sample std over seeds")
                    ax.legend(handles, labels, fontsize=7, loc="best")
            if drew:
                fig.suptitle(f"{metric} — {BAND_TEXT}", fontsize=8, wrap=True)
                fig.tight_layout()
                out_dir.mkdir(parents=True, exist_ok=True)   # only once there is a figure to put in it
                path = out_dir / f"{metric}_vs_{axis}.png"
                description = "\n".join([BAND_TEXT, *(f"legend: {x}" for x in legend), *fig_notes])
                fig.savefig(path, dpi=110, metadata={"Title": f"{metric} vs {xlabel}", "Description": description})
                written.append(Figure(path, legend, fig_notes))
            plt.close(fig)
    return written


