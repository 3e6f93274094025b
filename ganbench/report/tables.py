"""The comparison of runs: each run read from its directory (results.json, metrics.jsonl, .hydra/), grouped over
seeds, summarised (mean, std, Student-t intervals, AUC) and written as tables (report.md, report.csv, the
published toy layout). ganbench-report's command line is ganbench/report/cli.py."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from ganbench.errors import GanbenchError
from ganbench.metric_catalog import BOOKKEEPING
from ganbench.run.record import record_problem, row_problem

FINISHED = ("completed", "diverged")
STATUSES = ("completed", "diverged", "running", "preempted", "failed")
# Used only when results.json is missing (run still in progress): which way is better.
LOWER_IS_BETTER = {"fid", "kid_mean", "kid_std", "reverse_kl", "stacked_kl", "mmd", "energy", "is_std",
                   "mnist_is_std"}
IGNORED_OVERRIDE_PREFIXES = ("hydra.", "hydra/")
CURVE_KEYS = set(BOOKKEEPING)   # a metrics.jsonl row's bookkeeping: never a metric of the report
# Prefixes of the averaged generator's metrics (train.g_average: ema_fid, avg_fid).
AVERAGE_PREFIXES = ("ema_", "avg_")
# Range of each metric by definition: (lower, upper), None = unbounded. KID's mean and the energy
# distance are unbiased estimates that can be negative, so they are not clipped.
METRIC_RANGES: Dict[str, Tuple[Optional[float], Optional[float]]] = {
    "fid": (0.0, None), "kid_std": (0.0, None), "is_mean": (1.0, None), "is_std": (0.0, None),
    "precision": (0.0, 1.0), "recall": (0.0, 1.0), "coverage": (0.0, 1.0), "density": (0.0, None),
    "reverse_kl": (0.0, None), "stacked_kl": (0.0, None), "stacked_modes": (0.0, 1000.0),
    "modes": (0.0, None),   # upper bound: the dataset's number of modes, see metric_bounds
    "mnist_is": (1.0, 10.0), "mnist_is_std": (0.0, None),   # a classifier score over 10 digit classes
}
NUM_MODES = {"ring8": 8, "grid25": 25}
N1_MARK = "†"
N1_NOTE = f"{N1_MARK} n=1: no interval (a single finished run)"
BAND_TEXT = ("line: mean over seeds at each evaluation step; band (error bar at a single evaluation): mean ± 1 "
             "sample std over the seeds evaluated at that step, clipped to the metric's range (none where one seed)")


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
        names = set((self.results or {}).get("metrics", {})) - CURVE_KEYS
        for row in self.curve:
            names.update(k for k in row if k not in CURVE_KEYS)
        return sorted(names)

    def higher_is_better(self, metric: str) -> bool:
        info = (self.results or {}).get("metrics", {}).get(metric)
        if info is not None and "higher_is_better" in info:
            return bool(info["higher_is_better"])
        return base_metric(metric) not in LOWER_IS_BETTER

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
        """Final value: results.json ``final``, else the value of the last evaluation (at or before ``at_step``)
        that reports the metric. A null there (undefined: a reverse KL without high-quality samples) gives
        None, since an earlier value would describe another state; a NaN (a diverged run's last evaluation)
        is passed over, as the run's results.json does, for the last finite value."""
        info = (self.results or {}).get("metrics", {}).get(metric)
        if at_step is None and info is not None and "final" in info:
            return _finite(info["final"])
        last = None
        for row in self.curve:
            if metric not in row or "step" not in row or (at_step is not None and float(row["step"]) > at_step):
                continue
            value = row[metric]
            if value is None:
                last = None
            elif isinstance(value, (int, float)) and math.isfinite(value):
                last = float(value)
        return last

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

    def error_line(self) -> str:
        """The one-line error results.json records for a failed run."""
        err = str((self.results or {}).get("error") or "").strip()
        if not err:
            return "no error recorded in results.json"
        first = err.splitlines()[0]
        return first if len(first) <= 200 else first[:199] + "…"

    def null_reason(self, metric: str) -> Optional[str]:
        """results.json's reason for a metric whose final value is null (None if it has a value or no entry)."""
        info = (self.results or {}).get("metrics", {}).get(metric)
        if not isinstance(info, dict) or _finite(info.get("final")) is not None:
            return None
        return str(info.get("reason") or "no reason recorded")

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


def base_metric(metric: str) -> str:
    """The metric's name without the averaged generator's prefix: ema_fid -> fid."""
    for prefix in AVERAGE_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def metric_bounds(metric: str, runs: Sequence["Run"] = ()) -> Tuple[Optional[float], Optional[float]]:
    """The range a metric's values lie in by definition: ``*_pct`` in [0, 100], ``modes`` in
    [0, number of modes of the runs' dataset] (ring8: 8, grid25: 25; no upper bound if any run's dataset
    is unknown), others from METRIC_RANGES; (None, None) when unknown."""
    name = base_metric(metric)
    if name.endswith("_pct"):
        return 0.0, 100.0
    lo, hi = METRIC_RANGES.get(name, (None, None))
    if name == "modes" and runs:
        counts = [NUM_MODES.get(r.label_value("dataset")) for r in runs]
        if all(c is not None for c in counts):
            hi = float(max(counts))
    return lo, hi


def clip(x: float, bounds: Tuple[Optional[float], Optional[float]]) -> float:
    lo, hi = bounds
    if lo is not None and x < lo:
        return lo
    if hi is not None and x > hi:
        return hi
    return x


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


def summarize(values: Sequence[float], confidence: float = 0.95,
              bounds: Tuple[Optional[float], Optional[float]] = (None, None)) -> Stats:
    """Mean, sample std and Student-t confidence interval of ``values``.

    mean = Σx/n,  std = sqrt(Σ(x - mean)² / (n - 1)),
    CI = [max(lo, mean - h), min(hi, mean + h)],  h = t_{(1+confidence)/2, n-1} · std / sqrt(n),
    with [lo, hi] = ``bounds``, the metric's range: the true mean lies in it, so cutting the interval
    there loses no coverage (with n = 2, t = 12.7 and the raw interval easily spans ±100 %).
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
    return Stats(n, mean, std, clip(mean - half, bounds), clip(mean + half, bounds))


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


class MalformedRun(GanbenchError):
    """A run's file that the report cannot use: the file and what is wrong with it (one line)."""

    def __init__(self, file: Path, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file, self.problem = Path(file), problem


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise MalformedRun(path, "is not UTF-8 text") from None
    except OSError as err:
        raise MalformedRun(path, f"cannot be read ({err.strerror or type(err).__name__})") from None


def _read_results(path: Path) -> Optional[dict]:
    """results.json, parsed and checked (ganbench.run.record.record_problem); None when there is none (a run
    still in progress). It is written atomically (temp file + rename), so one that does not parse is
    damaged, not caught mid-write: MalformedRun."""
    if not path.exists():
        return None
    text = _read_text(path)
    if not text.strip():
        raise MalformedRun(path, "is empty")
    try:
        record = json.loads(text)
    except ValueError as err:
        raise MalformedRun(path, f"is not valid JSON ({err})") from None
    problem = record_problem(record)
    if problem:
        raise MalformedRun(path, problem)
    return dict(record, metrics=record.get("metrics") or {})


def _read_curve(path: Path) -> List[dict]:
    """metrics.jsonl's rows, each checked (ganbench.run.record.row_problem); [] when there is none.

    A row is appended in one write ending with a newline, so a last line without its newline is a write cut
    short by a kill (or one in progress): it is left out when it does not parse, as RunRecord does on
    resume. Any other line that does not parse, or that parses to something other than a row, is
    MalformedRun. Blank lines are passed over."""
    if not path.exists():
        return []
    *lines, last = _read_text(path).split("\n")   # last: "" when the file ends with its newline
    rows = []
    for number, line in enumerate(lines + [last], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            if number == len(lines) + 1:
                continue   # the unterminated last line: a torn write
            raise MalformedRun(path, f"line {number} is not valid JSON ({err})") from None
        problem = row_problem(row)
        if problem:
            raise MalformedRun(path, f"line {number}: {problem}")
        rows.append(row)
    return rows


def _read_yaml(path: Path, shape: type, what: str):
    """A file of Hydra's .hydra folder, parsed (yaml.safe_load: plain data, no objects) and of ``shape``."""
    try:
        data = yaml.safe_load(_read_text(path))
    except (yaml.YAMLError, ValueError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise MalformedRun(path, f"is not valid YAML ({reason}{where})") from None
    if not isinstance(data, shape):
        raise MalformedRun(path, f"is {_yaml_kind(data)}, expected {what}")
    return data


def _yaml_kind(data) -> str:
    if data is None:
        return "empty"
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(data), f"a {type(data).__name__}")


def _read_overrides(path: Path) -> List[str]:
    """.hydra/overrides.yaml: Hydra's list of the command line's overrides (``key=value`` strings)."""
    items = _read_yaml(path, list, "a list of overrides (key=value)")
    for item in items:
        if not isinstance(item, str):
            raise MalformedRun(path, f"holds {item!r}, expected overrides (key=value strings)")
    return items


def _read_choices(path: Path) -> Dict[str, str]:
    """hydra.runtime.choices of .hydra/hydra.yaml: each config group's chosen option."""
    node = _read_yaml(path, dict, "a mapping (Hydra's hydra.yaml)")
    for key in ("hydra", "runtime", "choices"):
        node = node.get(key)
        if node is None:
            return {}
        if not isinstance(node, dict):
            where = {"hydra": "hydra", "runtime": "hydra.runtime", "choices": "hydra.runtime.choices"}[key]
            raise MalformedRun(path, f"{where} is {_yaml_kind(node)}, expected a mapping")
    for group, option in node.items():
        if isinstance(option, (dict, list)):
            raise MalformedRun(path, f"hydra.runtime.choices.{group} is {_yaml_kind(option)}, expected an option name")
    return {str(k): str(v) for k, v in node.items()}


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
    """Read one run directory (overrides, results.json, metrics.jsonl, Hydra's choices); MalformedRun when
    one of the files it reads does not parse or has the wrong shape."""
    hydra_dir = path / ".hydra"
    results = _read_results(path / "results.json")
    overrides_list: List[str] = []
    if (hydra_dir / "overrides.yaml").exists():
        overrides_list = _read_overrides(hydra_dir / "overrides.yaml")
    elif results and results.get("overrides"):
        overrides_list = list(results["overrides"])
    choices: Dict[str, str] = {}
    if (hydra_dir / "hydra.yaml").exists():
        choices = _read_choices(hydra_dir / "hydra.yaml")
    config = (results or {}).get("config") or {}
    if not config and (hydra_dir / "config.yaml").exists():
        config = _read_yaml(hydra_dir / "config.yaml", dict, "a mapping (the run's composed config)")
    status = (results or {}).get("status") or "running"
    if status not in STATUSES:
        status = "failed"
    return Run(
        path=path,
        overrides=_parse_overrides(overrides_list),
        status=status,
        results=results,
        curve=_read_curve(path / "metrics.jsonl"),
        choices=choices,
        config=config,
    )


def find_runs(sweep_dirs: Sequence[Path], skipped: Optional[List[MalformedRun]] = None) -> List[Run]:
    """Every run directory under ``sweep_dirs`` (a run dir itself may be passed too). A run with a
    malformed file raises MalformedRun; given a list ``skipped``, it is left out and its error appended."""
    runs = []
    for root in sweep_dirs:
        if not root.is_dir():
            raise GanbenchError(f"not a directory: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            # submitit's logs and Hydra's own folder are not runs; a run never nests another run.
            # <dir>.old-<time>: a run that restart=true moved aside; it is not part of the sweep any more.
            dirnames[:] = sorted(d for d in dirnames if d not in (".submitit", ".hydra", "checkpoints")
                                 and ".old-" not in d)
            here = Path(dirpath)
            if (here / ".hydra" / "overrides.yaml").exists() or "results.json" in filenames:
                try:
                    runs.append(load_run(here))
                except MalformedRun as err:
                    if skipped is None:
                        raise
                    skipped.append(err)
                dirnames[:] = []
    return runs


# ---------------------------------------------------------------------------------------------
# grouping and summary


@dataclass
class Group:
    key: Tuple[Tuple[str, str], ...]
    runs: List[Run]
    stats: Dict[Tuple[str, str], Stats] = field(default_factory=dict)  # (metric, final|best|auc)
    # metric -> reason(s) from results.json, for a metric that is null in every finished run
    null_reasons: Dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.key) or "all"

    def status_counts(self) -> Counter:
        return Counter(r.status for r in self.runs)

    def single_evaluation(self, metrics: Sequence[str]) -> Optional[float]:
        """The step of the one evaluation when every run of the group has at most one finite evaluation
        of every metric in metrics.jsonl (and some run has one): a point, not a curve. Else None."""
        steps = set()
        for run in self.runs:
            for metric in metrics:
                run_steps = run.series(metric)[0]
                if len(run_steps) > 1:
                    return None
                steps.update(run_steps)
        return min(steps) if steps else None


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
            bounds = metric_bounds(metric, group.runs)
            for kind, getter in (("final", Run.final), ("best", Run.best), ("auc", Run.auc)):
                values = [v for v in (getter(r, metric, at_step) for r in finished) if v is not None]
                group.stats[(metric, kind)] = summarize(values, bounds=bounds)
            if group.stats[(metric, "final")].n == 0:
                reasons = sorted({x for x in (r.null_reason(metric) for r in finished) if x is not None})
                if reasons:
                    group.null_reasons[metric] = "; ".join(reasons)


def null_everywhere(runs: Sequence[Run], metrics: Sequence[str]) -> Dict[str, str]:
    """The metrics without a single finite value in any run, neither a final value in results.json nor an
    evaluation in metrics.jsonl (Inception's IS, FID and KID when its weights could not be had): {metric: the
    reason(s) results.json records for it}. The report names them in one line per reason (``null_lines``)
    instead of a table column of nulls and a blank figure each; report.csv keeps their (empty) columns."""
    out = {}
    for m in metrics:
        if any(r.final(m) is not None or r.series(m)[2] for r in runs):
            continue
        reasons = sorted({x for x in (r.null_reason(m) for r in runs) if x is not None})
        if reasons:
            out[m] = "; ".join(reasons)
        else:
            recorded = any(m in r.metric_names() for r in runs)
            out[m] = "no value recorded" if recorded else "no run records this metric"
    return out


def null_lines(empty: Dict[str, str]) -> List[str]:
    """One line per reason: the metrics ``null_everywhere`` found, then the reason, once."""
    by_reason: Dict[str, List[str]] = {}
    for metric, reason in empty.items():
        by_reason.setdefault(reason, []).append(metric)
    return [f"null in every run, not tabulated or plotted: {', '.join(ms)}: {reason}" for reason, ms in by_reason.items()]


def higher_is_better(runs: Sequence[Run], metric: str) -> bool:
    for run in runs:
        if run.results and metric in run.results.get("metrics", {}):
            return run.higher_is_better(metric)
    return base_metric(metric) not in LOWER_IS_BETTER


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
        return f"{_fmt(stats.mean)} {N1_MARK}"
    return f"{_fmt(stats.mean)} ± {_fmt(stats.std, 2)}"


def _cell(group: "Group", metric: str, kind: str) -> str:
    """A table cell: mean ± std, marked when n = 1, or ``null`` when the metric is null in every
    finished run (its reason is listed under the table)."""
    if group.stats[(metric, kind)].n == 0 and metric in group.null_reasons:
        return "null"
    return _pm(group.stats[(metric, kind)])


def _ci(stats: Stats) -> str:
    return "–" if math.isnan(stats.ci_low) else f"[{_fmt(stats.ci_low)}, {_fmt(stats.ci_high)}]"


def notes(groups: Sequence["Group"], metrics: Sequence[str], kinds: Sequence[str] = ("final",),
          empty: Optional[Dict[str, str]] = None) -> List[str]:
    """Lines under the table: the metrics null in every run (``empty``, from null_everywhere; ``metrics`` are
    the others), the n=1 footnote, a group's null metrics with their reason (one line per group and reason),
    groups evaluated once, failed runs with their error."""
    out = null_lines(empty or {})
    if any(g.stats[(m, k)].n == 1 for g in groups for m in metrics for k in kinds):
        out.append(N1_NOTE)
    for g in groups:
        by_reason: Dict[str, List[str]] = {}
        for m in metrics:
            if m in g.null_reasons:
                by_reason.setdefault(g.null_reasons[m], []).append(m)
        out += [f"null: {g.label}: {', '.join(ms)}: {reason}" for reason, ms in by_reason.items()]
    for g in groups:
        step = g.single_evaluation(metrics)
        if step is not None:
            out.append(f"one evaluation: {g.label}: every run was evaluated once (step {step:g}): the figures "
                       f"show a point, not a curve (eval.every > 0 gives curves)")
    for g in groups:
        for r in g.runs:
            if r.status == "failed":
                out.append(f"failed: {g.label} seed={r.seed or '–'}: {r.error_line()} ({r.path})")
    return out


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
        row += [_cell(g, m, k) for m in metrics for k in kinds]
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
    claims_md: Sequence[str] = (),
    empty: Optional[Dict[str, str]] = None,
    grids: Optional[Dict[Path, str]] = None,
) -> None:
    """report.md. ``metrics``: those with a value somewhere; ``empty``: the metrics null in every run, named in
    one line per reason (null_everywhere); ``grids``: each run's copied sample grid (copy_sample_grids)."""
    out = ["# ganbench report", "", "Sweeps: " + ", ".join(f"`{d}`" for d in sweep_dirs), ""]
    if at_step is not None:
        out += [f"Values as of generator step {at_step:g} (the last evaluation at or before it).", ""]
    out += [
        "Statistics over finished runs (completed or diverged) of each group: mean ± sample std; "
        "95 % CI = mean ± t(0.975, n-1)·std/√n; AUC = trapezoid area over generator steps divided "
        "by the step range (the metric's average over training). Intervals are clipped to the "
        "metric's range (e.g. modes ≥ 0, percentages in [0, 100], FID ≥ 0).",
        "",
        "## Summary (final values)",
        "",
        format_markdown_table(table_rows(groups, metrics, ("final",))),
        "",
    ]
    out += [f"- {line}" for line in notes(groups, metrics, ("final", "best", "auc"), empty)]
    out += [""] + list(claims_md)   # the preset's paper claims with their verdicts (ganbench/report/claims.py)
    out += samples_markdown(groups, grids or {}, at_step)
    for m in metrics:
        out += [f"## {m}", "", "| group | n | final | final 95 % CI | best | best 95 % CI | AUC | AUC 95 % CI |", "|---" * 8 + "|"]
        for g in groups:
            cells = [g.label, str(g.stats[(m, "final")].n)]
            if m in g.null_reasons:
                cells += [f"null: {g.null_reasons[m]}"] + ["–"] * 5
            else:
                for k in ("final", "best", "auc"):
                    st = g.stats[(m, k)]
                    cells += [_pm(st), _ci(st)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if figures:
        out += ["## Figures", "", f"Figures: {BAND_TEXT}.", ""]
        for fig in figures:
            out += [f"![{fig.path.stem}](figures/{fig.path.name})", ""]
            out += [f"*{fig.path.name}*: " + " ".join(fig.notes), ""] if fig.notes else []
    out += ["## Runs", "", "| group | seed | status | step / iterations | error | dir |", "|---|---|---|---|---|---|"]
    for g in groups:
        for r in g.runs:
            res = r.results or {}
            error = r.error_line().replace("|", "\\|") if r.status == "failed" else ""
            out.append(f"| {g.label} | {r.seed or '–'} | {r.status} | {res.get('step', '–')} / "
                       f"{res.get('iterations', '–')} | {error} | `{r.path}` |")
    path.write_text("\n".join(out) + "\n")


SAMPLES_FILE = "samples.png"   # a run's latest fixed-z sample grid (ganbench.run.board.log_image_grid)
GRIDS_DIR = "sample_grids"     # their copies in the report's folder


def file_name(text: str) -> str:
    """``text`` as part of a file name (and of a markdown link): letters, digits and ``_.=,+-``, at most 120."""
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text)[:120] or "all"


def copy_sample_grids(out: Path, groups: Sequence[Group], problems: Optional[List[str]] = None) -> Dict[Path, str]:
    """Copy each run's ``samples.png`` (the fixed-z grid an image run writes every ``train.sample_every`` steps
    and at its last step) to ``out/sample_grids/<group>.<run>_<label>_seed=<seed>.png``; returns {run directory:
    the copy's path relative to ``out``}. Copies rather than links into the runs, so that the report folder
    can be moved or shared whole. A grid that cannot be read is left out with a line in ``problems``."""
    links: Dict[Path, str] = {}
    for gi, g in enumerate(groups, 1):
        for ri, r in enumerate(g.runs, 1):
            src = r.path / SAMPLES_FILE
            if not src.is_file():
                continue
            who = f"seed={r.seed}" if r.seed is not None else r.path.name
            name = f"{gi:02d}.{ri:02d}_{file_name(g.label)[:80]}_{file_name(who)[:40]}.png"
            try:
                (out / GRIDS_DIR).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out / GRIDS_DIR / name)
            except OSError as err:
                if problems is None:
                    raise
                problems.append(f"{src}: cannot be copied ({err.strerror or type(err).__name__}); no sample grid "
                                f"for this run in the report")
                continue
            links[r.path] = f"{GRIDS_DIR}/{name}"
    return links


def _md_text(text: str) -> str:
    """``text`` inside a markdown table cell or image alt text."""
    return re.sub(r"([\\|\[\]])", r"\\\1", text)


def _seed_order(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def samples_markdown(groups: Sequence[Group], grids: Dict[Path, str], at_step: Optional[float] = None) -> List[str]:
    """report.md's "Samples": a row per group, its runs' sample grids side by side, a column per seed (or per
    run, when a group holds several runs of one seed, as ``--by`` can make). Nothing when no run has a grid
    (2-D runs draw their points into TensorBoard instead)."""
    if not grids:
        return []
    every = [r for g in groups for r in g.runs]
    shared = set.intersection(*(set(r.overrides.items()) for r in every))

    def cell(g: Group, r: Optional[Run], named: bool) -> str:
        if r is None:
            return "–"
        who = f"seed={r.seed}" if r.seed is not None else r.path.name
        if r.path not in grids:
            return _md_text(f"{who + ': ' if named else ''}no {SAMPLES_FILE} ({r.status})")
        image = f"![{_md_text(f'{g.label} {who}')}]({grids[r.path]})"
        # Several runs of one group and seed: what tells them apart, their overrides outside the group's key.
        own = " ".join(f"{k}={v}" for k, v in sorted(r.overrides.items())
                       if k != "seed" and (k, v) not in shared and (k, v) not in g.key)
        return (_md_text(f"{who} {own}".strip()) + "<br>" if named else "") + image

    by_seed = all(None not in {r.seed for r in g.runs} and len({r.seed for r in g.runs}) == len(g.runs) for g in groups)
    if by_seed:
        seeds = sorted({r.seed for g in groups for r in g.runs}, key=_seed_order)
        rows = [["group", *(f"seed={s}" for s in seeds)]]
        for g in groups:
            runs = {r.seed: r for r in g.runs}
            rows.append([_md_text(g.label), *(cell(g, runs.get(s), False) for s in seeds)])
    else:
        width = max(len(g.runs) for g in groups)
        rows = [["group", *(f"run {i}" for i in range(1, width + 1))]]
        for g in groups:
            rows.append([_md_text(g.label), *(cell(g, r, True) for r in g.runs), *([""] * (width - len(g.runs)))])
    when = (f" (the latest grids, not as of step {at_step:g})" if at_step is not None else "")
    return ["## Samples", "",
            f"Each run's latest `{SAMPLES_FILE}`{when}: its fixed-z sample grid, written every `train.sample_every` "
            f"generator steps and at its last step, copied into `{GRIDS_DIR}/`. A row per group, its seeds side by side.",
            "", format_markdown_table(rows), ""]


# ---------------------------------------------------------------------------------------------
# the published toy layout (--table toy)

# (metric, column title, decimals) in the order of the published ring/grid tables (PacGAN Table 1, VEEGAN Table 1).
TOY_COLUMNS = (("modes", "modes", 1), ("hq_pct", "high-quality %", 1), ("reverse_kl", "reverse KL", 3))
TOY_DATASETS = ("ring8", "grid25")   # column order; other datasets follow, sorted
TOY_HEADER = ("final values; each cell mean ± standard error over seeds (trials), SE = sample std/√n "
              "(std with n-1); statistics over finished runs (completed or diverged); (k/N): only k of the "
              "cell's N runs have a value (reverse KL: only runs with high-quality samples); "
              f"{N1_MARK}: n=1, no SE")


def mean_se(values: Sequence[float]) -> Tuple[int, float, float]:
    """(n, mean, standard error) with SE = s/√n, s = sqrt(Σ(x - mean)²/(n - 1)); SE is NaN for n ≤ 1."""
    n = len(values)
    if n == 0:
        return 0, math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return 1, mean, math.nan
    return n, mean, math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def toy_method_key(run: Run) -> Tuple[Tuple[str, str], ...]:
    """A run's method: every override but seed and dataset (objective, penalty, dynamics, pack, n_dis ...)."""
    return tuple(sorted((k, v) for k, v in run.overrides.items() if k not in ("seed", "dataset")))


def toy_cells(runs: Sequence[Run]):
    """The runs by method and dataset: ({method key: {dataset: runs}}, {method key: its label}, datasets in
    column order). A label leaves out the overrides every run shares (experiment=..., a fixed budget): they
    say nothing about the method."""
    cells: Dict[Tuple, Dict[str, List[Run]]] = {}
    for run in runs:
        cells.setdefault(toy_method_key(run), {}).setdefault(run.label_value("dataset"), []).append(run)
    shared = set.intersection(*(set(k) for k in cells)) if cells else set()
    label = {key: " ".join(f"{k}={v}" for k, v in key if (k, v) not in shared) or "all" for key in cells}
    datasets = sorted({d for c in cells.values() for d in c},
                      key=lambda d: (TOY_DATASETS.index(d) if d in TOY_DATASETS else len(TOY_DATASETS), d))
    return cells, label, datasets


def _runs_cell(runs: Sequence[Run]) -> str:
    counts = Counter(r.status for r in runs)
    other = ", ".join(f"{c} {s}" for s, c in sorted(counts.items()) if s != "completed")
    return f"{len(runs)}" + (f" ({other})" if other else "")


def _toy_value(runs: Sequence[Run], metric: str, decimals: int, at_step: Optional[float]) -> str:
    finished = [r for r in runs if r.reached(at_step)]
    values = [v for v in (r.final(metric, at_step) for r in finished) if v is not None]
    n, mean, se = mean_se(values)
    if n == 0:
        return "–" if not runs else f"– (0/{len(runs)})"
    cell = f"{mean:.{decimals}f} {N1_MARK}" if n == 1 else f"{mean:.{decimals}f} ± {se:.{decimals}f}"
    return cell + (f" ({n}/{len(runs)})" if n < len(runs) else "")


def toy_table(runs: Sequence[Run], at_step: Optional[float] = None) -> Tuple[List[List[str]], List[str]]:
    """The published toy layout: a row per method, per dataset the runs and modes, high-quality % and reverse
    KL as mean ± SE over seeds. Returns (rows with the header first, notes: failed runs with their error)."""
    cells, label, datasets = toy_cells(runs)
    header = ["method"]
    for d in datasets:
        header += [f"{d} runs"] + [f"{d} {title}" for _, title, _ in TOY_COLUMNS]
    rows, notes_out = [header], []
    for key in sorted(cells):
        row = [label[key]]
        for d in datasets:
            members = sorted(cells[key].get(d, []), key=lambda r: str(r.path))
            row += [_runs_cell(members) if members else "0"]
            row += [_toy_value(members, m, dec, at_step) for m, _, dec in TOY_COLUMNS]
            notes_out += [f"failed: {label[key]} dataset={d} seed={r.seed or '–'}: {r.error_line()} ({r.path})"
                          for r in members if r.status == "failed"]
        rows.append(row)
    return rows, notes_out


def toy_separations(runs: Sequence[Run], at_step: Optional[float] = None) -> List[str]:
    """Which methods differ beyond their standard errors: per dataset and metric, the best method (by the
    metric's direction) and every method whose interval mean ± SE does not overlap the best one's, above or
    below. Non-overlapping ±1 SE intervals are a weak criterion (about p < 0.16 for two equal-size
    samples), which is what a reader of a mean ± SE table can see; cells with n < 2 take no part."""
    cells, label, datasets = toy_cells(runs)
    lines = []
    for d in datasets:
        for metric, title, dec in TOY_COLUMNS:
            stats = {}
            for key, by_dataset in cells.items():
                members = [r for r in by_dataset.get(d, []) if r.reached(at_step)]
                n, mean, se = mean_se([v for v in (r.final(metric, at_step) for r in members) if v is not None])
                if n >= 2:
                    stats[key] = (mean, se)
            if len(stats) < 2:
                continue
            higher = metric != "reverse_kl"
            best = min(stats, key=lambda k: (-stats[k][0] if higher else stats[k][0], label[k]))  # ties: first label
            bm, bse = stats[best]
            apart = [k for k, (m, se) in stats.items() if k != best and (m + se < bm - bse or m - se > bm + bse)]
            within = [k for k in stats if k != best and k not in apart]
            lines.append(f"{d} {title}: best {label[best]} ({bm:.{dec}f} ± {bse:.{dec}f}); beyond SE from it: "
                         + (", ".join(sorted(label[k] for k in apart)) or "none")
                         + "; within SE: " + (", ".join(sorted(label[k] for k in within)) or "none"))
    return lines


#: The budget test of a toy comparison (README, "toy_mode_collapse"): the best method reaches this high-quality %.
TOY_HQ_TARGET = 80.0


def toy_budget_check(runs: Sequence[Run], at_step: Optional[float] = None) -> List[str]:
    """Whether budget T/2 was enough, read from runs of T steps (T = ``at_step``, else the runs' last step):
    with a constant learning rate the state at step T/2 of a T-step run is the T/2-step run's, so doubling
    the budget from T/2 to T is comparing a run with itself at T/2. The test (the toy comparison's budget
    rule): at T the best method reaches TOY_HQ_TARGET % high-quality samples on every dataset, and no
    method's mean mode count at T differs from its mean at T/2 by more than its standard error at T."""
    cells, label, datasets = toy_cells(runs)
    steps = [float(row["step"]) for r in runs for row in r.curve if "modes" in row and "step" in row]
    if not steps:
        return []
    end = float(at_step) if at_step is not None else max(steps)
    half = end / 2
    if not any(s <= half for s in steps):
        return [f"budget check: no evaluation at or before step {half:g} (half of {end:g}); set eval.every"]
    moved, best_hq, fine = [], [], True
    for d in datasets:
        hq = {}
        for key, by_dataset in cells.items():
            members = [r for r in by_dataset.get(d, []) if r.reached(end)]
            n, now, se = mean_se([v for v in (r.final("modes", end) for r in members) if v is not None])
            _, then, _ = mean_se([v for v in (r.final("modes", half) for r in members) if v is not None])
            if n >= 2 and abs(now - then) > se:
                moved.append(f"{d} {label[key]} {then:.1f} -> {now:.1f} (SE {se:.1f})")
            hq_n, hq[key], _ = mean_se([v for v in (r.final("hq_pct", end) for r in members) if v is not None])
            if hq_n == 0:
                del hq[key]
        if hq:
            top = max(hq, key=lambda k: hq[k])
            fine &= hq[top] >= TOY_HQ_TARGET
            best_hq.append(f"{d} {hq[top]:.1f} ({label[top]})")
        else:
            fine = False
    verdict = "passes" if fine and not moved else "fails"
    return [f"budget check: step {half:g} {verdict} the doubling test to step {end:g} (the best method's "
            f"high-quality % at {end:g} >= {TOY_HQ_TARGET:g} on every dataset, and no mean mode count moves by more "
            f"than its SE from {half:g} to {end:g})",
            f"  best high-quality % at {end:g}: " + ", ".join(best_hq),
            f"  mode counts that moved beyond SE: " + ("; ".join(moved) or "none")]


