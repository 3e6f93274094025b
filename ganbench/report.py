"""ganbench-report: compare the runs of one or more sweeps, grouped over seeds.

    ganbench-report outputs/sweeps/toy [more sweep dirs] [--by objective,penalty] [--sort reverse_kl]

A run directory is any folder under the given directories that holds ``.hydra/overrides.yaml`` or
``results.json``. Runs are grouped by every override except ``seed`` (or by the ``--by`` keys), and
each group gets, for every metric: n, the status counts, mean ± std and a 95 % Student-t confidence
interval of the final and the best value, and the normalised area under the metric curve. Writes
``report.md``, ``report.csv`` and ``figures/*.png`` (metric against generator steps and against
wall-clock time, mean line per group with a ±1 std band over seeds), and prints the table.

Which runs enter the statistics: finished runs (status ``completed`` or ``diverged``) with a finite
value. Runs that are still ``running`` (or have no results.json yet), ``preempted`` or ``failed`` are
counted in the status columns only. A diverged run keeps the values its last evaluations produced.

``--at-step N`` reports every value as of generator step N (the last evaluation at or before N, from
metrics.jsonl); runs still in progress that were evaluated at or past N count too. This gives the
DRAGAN paper's "same number of generator iterations" scores from runs that trained longer.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from ganbench.errors import GanbenchError

FINISHED = ("completed", "diverged")
STATUSES = ("completed", "diverged", "running", "preempted", "failed")
# Used only when results.json is missing (run still in progress): which way is better.
LOWER_IS_BETTER = {"fid", "kid_mean", "kid_std", "reverse_kl", "stacked_kl", "mmd", "energy", "is_std"}
IGNORED_OVERRIDE_PREFIXES = ("hydra.", "hydra/")
CURVE_KEYS = {"step", "images_seen", "wall_time_s"}


@dataclass
class Run:
    """One run directory as the report sees it."""

    path: Path
    overrides: Dict[str, str]
    status: str
    results: Optional[dict]
    curve: List[dict]
    choices: Dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def seed(self) -> Optional[str]:
        return self.overrides.get("seed")

    def metric_names(self) -> List[str]:
        names = set((self.results or {}).get("metrics", {}))
        for row in self.curve:
            names.update(k for k in row if k not in CURVE_KEYS)
        return sorted(names)

    def higher_is_better(self, metric: str) -> bool:
        info = (self.results or {}).get("metrics", {}).get(metric)
        if info is not None and "higher_is_better" in info:
            return bool(info["higher_is_better"])
        return metric.removeprefix("ema_") not in LOWER_IS_BETTER

    def series(self, metric: str, at_step: Optional[float] = None) -> Tuple[List[float], List[float], List[float]]:
        """(steps, wall_time_s, values) of the finite evaluations of ``metric`` in metrics.jsonl."""
        steps, times, values = [], [], []
        for row in self.curve:
            value = row.get(metric)
            if at_step is not None and float(row.get("step", math.inf)) > at_step:
                continue
            if isinstance(value, (int, float)) and math.isfinite(value) and "step" in row:
                steps.append(float(row["step"]))
                times.append(float(row.get("wall_time_s", math.nan)))
                values.append(float(value))
        return steps, times, values

    def final(self, metric: str, at_step: Optional[float] = None) -> Optional[float]:
        """Final value: results.json ``final``, else the last finite curve value (at or before ``at_step``)."""
        info = (self.results or {}).get("metrics", {}).get(metric)
        if at_step is None and info is not None and "final" in info:
            return _finite(info["final"])
        _, _, values = self.series(metric, at_step)
        return values[-1] if values else None

    def best(self, metric: str, at_step: Optional[float] = None) -> Optional[float]:
        """Best value: results.json ``best``, else max/min of the curve (up to ``at_step``)."""
        info = (self.results or {}).get("metrics", {}).get(metric)
        if at_step is None and info is not None and "best" in info:
            return _finite(info["best"])
        _, _, values = self.series(metric, at_step)
        if not values:
            return None
        return max(values) if self.higher_is_better(metric) else min(values)

    def auc(self, metric: str, at_step: Optional[float] = None) -> Optional[float]:
        steps, _, values = self.series(metric, at_step)
        return normalized_auc(steps, values)

    def reached(self, at_step: Optional[float]) -> bool:
        """Whether the run counts for the statistics: finished, or evaluated at ``at_step`` or later."""
        if self.status in FINISHED:
            return True
        if at_step is None or self.status == "failed":
            return False
        return any(float(row.get("step", -1)) >= at_step for row in self.curve)

    def label_value(self, key: str) -> str:
        """The value of ``key`` for grouping: override, else Hydra's group choice, else config value."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return str(self.choices[key])
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return "?"
            node = node[part]
        return str(node) if not isinstance(node, dict) else str(node.get("name", "?"))


def _finite(value) -> Optional[float]:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass
class Stats:
    """Summary of one metric over the seeds of one group."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def ci_half(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float], confidence: float = 0.95) -> Stats:
    """Mean, sample std and Student-t confidence interval of ``values``.

    mean = Σx/n,  std = sqrt(Σ(x - mean)² / (n - 1)),
    CI = mean ± t_{(1+confidence)/2, n-1} · std / sqrt(n).
    With n = 1 the std and CI are NaN; with n = 0 everything is NaN.
    """
    n = len(values)
    if n == 0:
        return Stats(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return Stats(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    from scipy.stats import t  # noqa: PLC0415 - only needed here; keeps `--help` fast

    half = float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Stats(n, mean, std, mean - half, mean + half)


def normalized_auc(steps: Sequence[float], values: Sequence[float]) -> Optional[float]:
    """Trapezoid area under the curve divided by the step range: the curve's average value.

    AUC = 1/(s_K - s_1) · Σ_{k<K} (s_{k+1} - s_k) · (v_k + v_{k+1}) / 2  over generator steps s_k
    (the evaluations in metrics.jsonl). A single evaluation gives its value; none gives None.
    Dividing by the run's own step range makes runs with different budgets comparable as
    "mean metric over training": higher for a metric that improves early and stays good.
    """
    if not steps:
        return None
    if len(steps) == 1 or steps[-1] == steps[0]:
        return float(values[-1])
    area = sum((steps[k + 1] - steps[k]) * (values[k] + values[k + 1]) / 2 for k in range(len(steps) - 1))
    return area / (steps[-1] - steps[0])


# ---------------------------------------------------------------------------------------------
# loading


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or caught mid-write by a run still in progress


def _read_jsonl(path: Path) -> List[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a half-written last line of a running job
    return rows


def _parse_overrides(items: Iterable[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item or item.startswith("~"):
            continue
        key, value = item.split("=", 1)
        key = key.lstrip("+")
        if key.startswith(IGNORED_OVERRIDE_PREFIXES):
            continue
        out[key] = value
    return out


def load_run(path: Path) -> Run:
    """Read one run directory (overrides, results.json, metrics.jsonl, Hydra's choices)."""
    hydra_dir = path / ".hydra"
    results = _read_json(path / "results.json")
    overrides_list: List[str] = []
    if (hydra_dir / "overrides.yaml").exists():
        overrides_list = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
    elif results and results.get("overrides"):
        overrides_list = list(results["overrides"])
    choices: Dict[str, str] = {}
    if (hydra_dir / "hydra.yaml").exists():
        hydra_cfg = yaml.safe_load((hydra_dir / "hydra.yaml").read_text()) or {}
        choices = {k: str(v) for k, v in (hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices") or {}).items()}
    config = (results or {}).get("config") or {}
    if not config and (hydra_dir / "config.yaml").exists():
        config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
    status = (results or {}).get("status") or "running"
    if status not in STATUSES:
        status = "failed"
    return Run(
        path=path,
        overrides=_parse_overrides(overrides_list),
        status=status,
        results=results,
        curve=_read_jsonl(path / "metrics.jsonl"),
        choices=choices,
        config=config,
    )


def find_runs(sweep_dirs: Sequence[Path]) -> List[Run]:
    """Every run directory under ``sweep_dirs`` (a run dir itself may be passed too)."""
    runs = []
    for root in sweep_dirs:
        if not root.is_dir():
            raise GanbenchError(f"not a directory: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            # submitit's logs and Hydra's own folder are not runs; a run never nests another run.
            dirnames[:] = sorted(d for d in dirnames if d not in (".submitit", ".hydra", "checkpoints"))
            here = Path(dirpath)
            if (here / ".hydra" / "overrides.yaml").exists() or "results.json" in filenames:
                runs.append(load_run(here))
                dirnames[:] = []
    return runs


# ---------------------------------------------------------------------------------------------
# grouping and summary


@dataclass
class Group:
    key: Tuple[Tuple[str, str], ...]
    runs: List[Run]
    stats: Dict[Tuple[str, str], Stats] = field(default_factory=dict)  # (metric, final|best|auc)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.key) or "all"

    def status_counts(self) -> Counter:
        return Counter(r.status for r in self.runs)


def group_runs(runs: Sequence[Run], by: Optional[Sequence[str]] = None) -> List[Group]:
    """Group runs by every override except seed, or by the given keys."""
    groups: Dict[Tuple, List[Run]] = {}
    for run in runs:
        if by:
            key = tuple((k, run.label_value(k)) for k in by)
        else:
            key = tuple(sorted((k, v) for k, v in run.overrides.items() if k != "seed"))
        groups.setdefault(key, []).append(run)
    if not by:
        # Overrides shared by every run (e.g. experiment=...) say nothing about the comparison.
        shared = set.intersection(*(set(k) for k in groups)) if groups else set()
        groups = {tuple(kv for kv in k if kv not in shared): v for k, v in groups.items()}
    return [Group(key, sorted(v, key=lambda r: str(r.path))) for key, v in sorted(groups.items())]


def summarize_groups(groups: Sequence[Group], metrics: Sequence[str], at_step: Optional[float] = None) -> None:
    """Fill ``group.stats`` with final/best/auc statistics over the group's finished runs.

    With ``at_step`` every value is taken from the curve up to that generator step, and runs still
    in progress that have been evaluated at or past it count too (the DRAGAN paper's ^g budget).
    """
    for group in groups:
        finished = [r for r in group.runs if r.reached(at_step)]
        for metric in metrics:
            for kind, getter in (("final", Run.final), ("best", Run.best), ("auc", Run.auc)):
                values = [v for v in (getter(r, metric, at_step) for r in finished) if v is not None]
                group.stats[(metric, kind)] = summarize(values)


def higher_is_better(runs: Sequence[Run], metric: str) -> bool:
    for run in runs:
        if run.results and metric in run.results.get("metrics", {}):
            return run.higher_is_better(metric)
    return metric.removeprefix("ema_") not in LOWER_IS_BETTER


def sort_groups(groups: List[Group], metric: Optional[str], runs: Sequence[Run]) -> List[Group]:
    """Best first by the mean final value of ``metric``; groups without a value last."""
    if not metric:
        return groups
    sign = -1.0 if higher_is_better(runs, metric) else 1.0

    def key(group: Group):
        mean = group.stats[(metric, "final")].mean
        return (math.isnan(mean), sign * mean if not math.isnan(mean) else 0.0)

    return sorted(groups, key=key)


# ---------------------------------------------------------------------------------------------
# output


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.{digits}g}"


def _pm(stats: Stats) -> str:
    if stats.n == 0:
        return "–"
    if stats.n == 1:
        return _fmt(stats.mean)
    return f"{_fmt(stats.mean)} ± {_fmt(stats.std, 2)}"


def _status_cell(group: Group) -> Tuple[str, str, str]:
    counts = group.status_counts()
    other = {s: c for s, c in counts.items() if s not in FINISHED}
    return (
        str(counts.get("completed", 0)),
        str(counts.get("diverged", 0)),
        ", ".join(f"{c} {s}" for s, c in sorted(other.items())) or "0",
    )


def table_rows(groups: Sequence[Group], metrics: Sequence[str], kinds: Sequence[str]) -> List[List[str]]:
    header = ["group", "n", "completed", "diverged", "other"]
    header += [f"{m} {k}" for m in metrics for k in kinds]
    rows = [header]
    for g in groups:
        row = [g.label, str(len(g.runs)), *_status_cell(g)]
        row += [_pm(g.stats[(m, k)]) for m in metrics for k in kinds]
        rows.append(row)
    return rows


def format_text_table(rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown_table(rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def write_csv(path: Path, groups: Sequence[Group], metrics: Sequence[str], by_keys: Sequence[str]) -> None:
    header = ["group", *by_keys, "n", *(f"n_{s}" for s in STATUSES)]
    for m in metrics:
        for k in ("final", "best", "auc"):
            header += [f"{m}_{k}_{s}" for s in ("n", "mean", "std", "ci95_low", "ci95_high")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for g in groups:
            values = dict(g.key)
            counts = g.status_counts()
            row: List[object] = [g.label, *(values.get(k, "") for k in by_keys), len(g.runs)]
            row += [counts.get(s, 0) for s in STATUSES]
            for m in metrics:
                for k in ("final", "best", "auc"):
                    st = g.stats[(m, k)]
                    row += [st.n, *("" if math.isnan(x) else repr(x) for x in (st.mean, st.std, st.ci_low, st.ci_high))]
            writer.writerow(row)


def write_markdown(
    path: Path,
    groups: Sequence[Group],
    metrics: Sequence[str],
    sweep_dirs: Sequence[Path],
    figures: Sequence[Path],
    at_step: Optional[float] = None,
) -> None:
    out = ["# ganbench report", "", "Sweeps: " + ", ".join(f"`{d}`" for d in sweep_dirs), ""]
    if at_step is not None:
        out += [f"Values as of generator step {at_step:g} (the last evaluation at or before it).", ""]
    out += [
        "Statistics over finished runs (completed or diverged) of each group: mean ± sample std; "
        "95 % CI = mean ± t(0.975, n-1)·std/√n; AUC = trapezoid area over generator steps divided "
        "by the step range (the metric's average over training).",
        "",
        "## Summary (final values)",
        "",
        format_markdown_table(table_rows(groups, metrics, ("final",))),
        "",
    ]
    for m in metrics:
        out += [f"## {m}", "", "| group | n | final | final 95 % CI | best | best 95 % CI | AUC | AUC 95 % CI |", "|---" * 8 + "|"]
        for g in groups:
            cells = [g.label, str(g.stats[(m, "final")].n)]
            for k in ("final", "best", "auc"):
                st = g.stats[(m, k)]
                ci = "–" if math.isnan(st.ci_low) else f"[{_fmt(st.ci_low)}, {_fmt(st.ci_high)}]"
                cells += [_pm(st), ci]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if figures:
        out += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    out += ["## Runs", "", "| group | seed | status | step / iterations | dir |", "|---|---|---|---|---|"]
    for g in groups:
        for r in g.runs:
            res = r.results or {}
            out.append(
                f"| {g.label} | {r.seed or '–'} | {r.status} | {res.get('step', '–')} / {res.get('iterations', '–')} | `{r.path}` |"
            )
    path.write_text("\n".join(out) + "\n")


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


def _panel_key(groups: Sequence[Group]) -> Optional[str]:
    """Split figures by dataset when the groups span several (their metrics' scales differ)."""
    datasets = {g.runs[0].label_value("dataset") for g in groups if g.runs}
    return "dataset" if len(datasets) > 1 else None


def plot_figures(out_dir: Path, groups: Sequence[Group], metrics: Sequence[str]) -> List[Path]:
    """One PNG per metric and x-axis (generator steps, wall-clock s); line = mean, band = ±1 std.

    When the groups cover several datasets, each dataset gets its own panel of the figure.
    """
    import matplotlib  # noqa: PLC0415 - figures are optional and matplotlib is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
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
            fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
            drew = False
            for ax, (panel, members) in zip(axes[0], sorted(panels.items())):
                for g in members:
                    # Runs still in progress draw too: their curve so far is informative.
                    steps, times, means, stds = _mean_std_by_step(g.runs, metric)
                    if not steps:
                        continue
                    xs = steps if axis == "step" else times
                    line = ax.plot(xs, means, label=label(g), color=colors[label(g)], linewidth=1.5)[0]
                    lo = [m - s for m, s in zip(means, stds)]
                    hi = [m + s for m, s in zip(means, stds)]
                    ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
                    drew = True
                ax.set_xlabel(xlabel)
                ax.set_ylabel(metric)
                ax.grid(alpha=0.3)
                if panel_key:
                    ax.set_title(f"{panel_key}={panel}")
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7, loc="best")
            if drew:
                fig.suptitle(f"{metric}: mean over seeds, band ±1 std", fontsize=10)
                fig.tight_layout()
                path = out_dir / f"{metric}_vs_{axis}.png"
                fig.savefig(path, dpi=110)
                written.append(path)
            plt.close(fig)
    return written


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganbench-report",
        description="Summarise ganbench sweeps: per group of runs (all overrides but seed), mean ± std "
        "and 95 % CI of each metric's final and best value and its normalised AUC.",
    )
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep (or run) directories to read")
    p.add_argument("--by", default=None, help="comma-separated keys to group by (default: all overrides but seed)")
    p.add_argument("--sort", default=None, metavar="METRIC", help="sort groups best-first by this metric's final mean")
    p.add_argument("--metrics", default=None, help="comma-separated metrics to report (default: all found)")
    p.add_argument("--at-step", type=float, default=None, metavar="N",
                   help="report values as of generator step N (last evaluation at or before N) instead of the end")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the first sweep dir)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    return p


def run_report(args: argparse.Namespace) -> str:
    runs = find_runs(args.sweep_dirs)
    if not runs:
        raise GanbenchError(f"no run directories (with .hydra/overrides.yaml or results.json) under {', '.join(map(str, args.sweep_dirs))}")
    by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by else None
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    else:
        metrics = sorted({m for r in runs for m in r.metric_names()})
    if args.sort and args.sort not in metrics:
        raise GanbenchError(f"--sort {args.sort}: no such metric (have: {', '.join(metrics) or 'none'})")
    groups = group_runs(runs, by)
    summarize_groups(groups, metrics, args.at_step)
    groups = sort_groups(groups, args.sort, runs)
    by_keys = by or sorted({k for g in groups for k, _ in g.key})

    out = args.out or args.sweep_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    figures = [] if args.no_figures else plot_figures(out / "figures", groups, metrics)
    write_csv(out / "report.csv", groups, metrics, by_keys)
    write_markdown(out / "report.md", groups, metrics, args.sweep_dirs, figures, args.at_step)

    table = format_text_table(table_rows(groups, metrics, ("final",)))
    counts = Counter(r.status for r in runs)
    summary = ", ".join(f"{c} {s}" for s, c in sorted(counts.items()))
    return f"{len(runs)} runs in {len(groups)} groups ({summary}); final values, mean ± std over seeds\n{table}\nwrote {out / 'report.md'}, {out / 'report.csv'}" + (
        f", {len(figures)} figures in {out / 'figures'}" if figures else ""
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(run_report(args))
    except GanbenchError as err:
        print(f"ganbench-report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
