"""ganbench-report: compare the runs of one or more sweeps, grouped over seeds.

    ganbench-report outputs/sweeps/toy [more sweep dirs] [--by objective,penalty] [--sort reverse_kl]

A run directory is any folder under the given directories that holds ``.hydra/overrides.yaml`` or
``results.json``. Runs are grouped by every override except ``seed`` (or by the ``--by`` keys), and
each group gets, for every metric: n, the status counts, mean ± std and a 95 % Student-t confidence
interval of the final and the best value, and the normalised area under the metric curve. Writes
``report.md``, ``report.csv`` and ``figures/*.png`` (metric against generator steps and against
wall-clock time, mean line per group with a ±1 sample-std band over seeds), and prints the table. report.md
shows each image run's latest ``samples.png`` (copied into ``sample_grids/``), a row per group, seeds side by
side: with few steps or without Inception weights they are what a run has to show.

Honest statistics: intervals and bands are clipped to the metric's range (``metric_bounds``: counts of
modes in [0, number of modes], percentages in [0, 100], FID/KL ≥ 0, ...); a cell from a single run is
marked ``†`` (n=1: no interval); a metric that is null in every finished run of a group is shown as
``null`` with the reason results.json gives; a metric null in every run of the report (IS/FID/KID without
the Inception weights) is no column and no figure but one line with its reason; the bookkeeping fields of
metrics.jsonl (metric_catalog.BOOKKEEPING: step, images_seen, wall_time_s, eval_samples) are never metrics;
a group evaluated once per run is said to be one point, not a curve; failed runs are listed with their
one-line error.

Which runs enter the statistics: finished runs (status ``completed`` or ``diverged``) with a finite
value. Runs that are still ``running`` (or have no results.json yet), ``preempted`` or ``failed`` are
counted in the status columns only. A diverged run keeps the values its last evaluations produced.
A run with a malformed file (results.json, a metrics.jsonl line or a .hydra/*.yaml that does not parse or
has the wrong shape: ganbench.run.record.record_problem / row_problem) is left out with one warning line
naming the file and what is wrong (MalformedRun); the rest is reported.

``--at-step N`` reports every value as of generator step N (the last evaluation at or before N, from
metrics.jsonl); runs still in progress that were evaluated at or past N count too. This gives the
DRAGAN paper's "same number of generator iterations" scores from runs that trained longer.

``--table toy`` prints (and writes to ``toy_table.md``) the published ring/grid layout instead: a row per
method (every override but ``seed`` and ``dataset``, less those all runs share), per dataset (ring8, grid25)
the number of runs with their statuses and modes, high-quality % and reverse KL, each as mean ± standard
error over seeds, SE = s/√n with the sample std s. Finished runs (completed, diverged) enter the means;
a cell whose value comes from k of its N runs says (k/N), e.g. reverse KL averaged over the runs that had
high-quality samples; failed runs are listed with their error.

``--table bogonet`` prints (and writes to ``bogonet_table.md``) the DRAGAN paper's Table 1 over BogoNet
instances and a per-instance pairwise table with a sign test (ganbench/report/bogonet.py); ``--judge``
writes a blind side-by-side judging page and ``--judge-score FILE ...`` turns saved judgements into the
qualitative score (ganbench/report/judge.py). The report's figures include, for runs that logged it, the gradient
norm at real data against steps with the mode metric beside it (ganbench/report/gradnorm.py).

Paper claims: when the runs' saved config carries their preset's ``claims:`` list (ganbench/report/claims.py), the
report and ``--table toy`` print each claim's verdict (reproduced / not reproduced / not enough data) with
the numbers behind it, and put the same table into report.md / toy_table.md. ``--claims PRESET`` checks the
claims conf/experiment/PRESET.yaml states now instead, over every run: a run carries the list of the day it
started, so runs recorded before a preset's claims changed (a claim added, ``runs_per_arm``) are checked
against the current list in one section rather than two.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ganbench.errors import GanbenchError, did_you_mean
from ganbench.report import bogonet as report_bogonet, claims, gradnorm as report_gradnorm, judge
from ganbench.report.figures import plot_figures
from ganbench.report.tables import (CURVE_KEYS, GRIDS_DIR, TOY_COLUMNS, TOY_HEADER, MalformedRun, Run, copy_sample_grids,
                                    find_runs, format_markdown_table, format_text_table, group_runs, notes,
                                    null_everywhere, sort_groups, summarize_groups, table_rows, toy_budget_check,
                                    toy_separations, toy_table, write_csv, write_markdown)


def run_toy_table(args: argparse.Namespace, runs: Sequence[Run]) -> str:
    if not any(m in r.metric_names() for r in runs for m, _, _ in TOY_COLUMNS):
        raise GanbenchError("--table toy: no run has modes, hq_pct or reverse_kl (a ring8/grid25 sweep has them)")
    rows, failed = toy_table(runs, args.at_step)
    # The preset's paper claims; computed before anything is written, so a malformed claim writes nothing.
    given = getattr(args, "given_claims", None)   # --claims PRESET (run_report)
    claim_text, claim_md = claims.section(runs, args.at_step, budget=False, given=given)
    at = f" as of generator step {args.at_step:g}" if args.at_step is not None else ""
    out = args.out or args.sweep_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    md = ["# ganbench toy table", "", "Sweeps: " + ", ".join(f"`{d}`" for d in args.sweep_dirs), "",
          TOY_HEADER.replace("final values", f"final values{at}", 1) + ".", "", format_markdown_table(rows), ""]
    md += [f"- {line}" for line in failed]
    apart = toy_separations(runs, args.at_step)
    if apart:
        md += ["Methods whose mean ± SE interval does not overlap the best method's:", ""]
        md += [f"- {line}" for line in apart] + [""]
    budget = toy_budget_check(runs, args.at_step)
    md += budget[:1] + [f"- {line.strip()}" for line in budget[1:]] + ([""] if budget else [])
    md += claim_md
    (out / "toy_table.md").write_text("\n".join(md) + "\n")
    lines = [f"{len(runs)} runs; " + TOY_HEADER.replace("final values", f"final values{at}", 1),
             format_text_table(rows), *failed]
    if apart:
        lines += ["beyond standard error (intervals mean ± SE that do not overlap the best method's):", *apart]
    lines += budget + claim_text
    lines.append(f"wrote {out / 'toy_table.md'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, ``ganbench-report: error: ...`` and exit status 2, instead of
    the usage block before it (``--help`` prints that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _step(text: str) -> float:
    """--at-step: a generator step, a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a generator step, a number >= 0 (got {text!r})")
    return value


def check_out(out: Optional[Path]) -> None:
    """--out: an existing folder, or a new one in an existing folder. A missing parent is refused rather than
    made (a typo would plant a tree of folders), so that a failed call writes nothing."""
    if out is None:
        return
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise GanbenchError(f"--out {out}: exists and is not a directory (give a folder for the report)")
        folder = out
    else:
        folder = out.parent
        if not folder.is_dir():
            why = "is not a directory" if folder.exists() else "does not exist (create it first)"
            raise GanbenchError(f"--out {out}: its parent {folder} {why}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GanbenchError(f"--out {out}: {folder} is not writable")


def warn(line: str) -> None:
    print(f"ganbench-report: warning: {line}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ganbench-report",
        description="Summarise ganbench sweeps: per group of runs (all overrides but seed), mean ± std "
        "and 95 % CI of each metric's final and best value and its normalised AUC.",
    )
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep (or run) directories to read")
    p.add_argument("--by", default=None, help="comma-separated keys to group by (default: all overrides but seed)")
    p.add_argument("--sort", default=None, metavar="METRIC", help="sort groups best-first by this metric's final mean")
    p.add_argument("--metrics", default=None, help="comma-separated metrics to report (default: all found)")
    p.add_argument("--at-step", type=_step, default=None, metavar="N",
                   help="report values as of generator step N (last evaluation at or before N) instead of the end")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder, existing or new in an existing folder (default: the first sweep dir)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--table", choices=["toy", "bogonet"], default=None,
                   help="toy: instead of the report, the published ring/grid layout: a row per method (every "
                   "override but seed and dataset), per dataset (ring8, grid25) the runs and modes, high-quality %% "
                   "and reverse KL as mean ± standard error (std/√n) over seeds; written to toy_table.md. "
                   "bogonet: the DRAGAN paper's Table 1 over BogoNet instances (mean and std of the final score "
                   "and of the area under the score curve per algorithm) and the per-instance pairwise table "
                   "with a sign test; written to bogonet_table.md")
    p.add_argument("--claims", default=None, metavar="PRESET",
                   help="check the claims that conf/experiment/PRESET.yaml states now, over every run, instead of "
                   "the lists the runs carry from the day they started")
    report_bogonet.add_arguments(p)
    judge.add_arguments(p)
    return p


def preset_claims(name: str) -> Tuple[List[claims.Claim], str]:
    """``--claims PRESET``: the preset's claims list as conf/ composes it now (interpolations such as
    ``${bogonet.instances}`` resolved), parsed; an unknown preset or one without claims is a one-line error."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import ganbench.cli as ganbench_cli   # conf/ and its resolvers (gb.shared, gb.dirname)

    conf = Path(ganbench_cli.config_dir())
    presets = sorted(p.stem for p in (conf / "experiment").glob("*.yaml"))
    if name not in presets:
        close = did_you_mean(name, presets)
        raise GanbenchError(f"--claims {name}: unknown preset; " + (f"did you mean '{close}'? " if close else "")
                            + f"presets: {', '.join(presets)}")
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"])
    nodes = OmegaConf.to_container(cfg.claims, resolve=True) if cfg.get("claims") else []
    if not nodes:
        raise GanbenchError(f"--claims {name}: the preset states no claims; name a comparison preset "
                            f"(docs/presets.md)")
    return claims.parse_all(nodes), name


def run_report(args: argparse.Namespace) -> str:
    report_bogonet.check_args(args)
    check_out(args.out)
    # --claims: composed once, before anything is read or written (an unknown preset is one line)
    args.given_claims = preset_claims(args.claims) if getattr(args, "claims", None) else None
    if getattr(args, "table", None) is None and not getattr(args, "judge", False) and not getattr(args, "judge_score", None):
        from ganbench.report.search import find_storage, run_search_report

        db = find_storage(args.sweep_dirs)
        if db is not None:  # a hyperparameter search (hydra/sweeper=optuna): its trials, best, importances
            return run_search_report(args, db)
    skipped: List[MalformedRun] = []
    runs = find_runs(args.sweep_dirs, skipped)
    for err in skipped:
        warn(f"{err}; run skipped")
    if not runs:
        if skipped:
            raise GanbenchError(f"no readable run under {', '.join(map(str, args.sweep_dirs))}: all {len(skipped)} "
                                f"have a malformed file (warnings above)")
        raise GanbenchError(f"no run directories (with .hydra/overrides.yaml or results.json) under {', '.join(map(str, args.sweep_dirs))}")
    if getattr(args, "table", None) == "toy":
        return run_toy_table(args, runs)
    if getattr(args, "table", None) == "bogonet":
        qual = None
        if getattr(args, "judge_score", None):
            qual = judge.qualitative_scores(judge.out_dir(args), args.judge_score)["scores"]
        return report_bogonet.run_bogonet_table(args, runs, qual)
    if getattr(args, "judge", False):
        return judge.run_judge(args, runs)
    if getattr(args, "judge_score", None):
        return judge.run_judge_score(args)
    by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by else None
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        kept = [m for m in metrics if m in CURVE_KEYS]
        if kept:
            raise GanbenchError(f"--metrics {','.join(kept)}: bookkeeping of metrics.jsonl, not a metric (metrics "
                                f"found: {', '.join(sorted({m for r in runs for m in r.metric_names()})) or 'none'})")
    else:
        metrics = sorted({m for r in runs for m in r.metric_names()})
    if args.sort and args.sort not in metrics:
        raise GanbenchError(f"--sort {args.sort}: no such metric (have: {', '.join(metrics) or 'none'})")
    groups = group_runs(runs, by)
    summarize_groups(groups, metrics, args.at_step)
    groups = sort_groups(groups, args.sort, runs)
    # Metrics null in every run (no Inception weights: IS, FID, KID) are one line, not columns and blank figures.
    empty = null_everywhere(runs, metrics)
    shown = [m for m in metrics if m not in empty]
    by_keys = by or sorted({k for g in groups for k, _ in g.key})
    # The preset's paper claims (and the toy budget check); before anything is written: a malformed claim fails.
    claim_text, claim_md = claims.section(runs, args.at_step, given=getattr(args, "given_claims", None))

    out = args.out or args.sweep_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    unreadable: List[str] = []
    figures = [] if args.no_figures else plot_figures(out / "figures", groups, shown)
    if not args.no_figures:
        figures += report_gradnorm.plot_grad_norm(out / "figures", groups, unreadable)
    grids = copy_sample_grids(out, groups, unreadable)
    for line in unreadable:
        warn(line)
    write_csv(out / "report.csv", groups, metrics, by_keys)
    write_markdown(out / "report.md", groups, shown, args.sweep_dirs, figures, args.at_step, claim_md, empty, grids)

    table = format_text_table(table_rows(groups, shown, ("final",)))
    counts = Counter(r.status for r in runs)
    summary = ", ".join(f"{c} {s}" for s, c in sorted(counts.items()))
    left_out = f"; {len(skipped)} run(s) skipped, malformed (warnings above)" if skipped else ""
    lines = [f"{len(runs)} runs in {len(groups)} groups ({summary}){left_out}; final values, mean ± std over seeds",
             table]
    lines += notes(groups, shown, ("final",), empty)
    lines += claim_text
    lines.append(f"wrote {out / 'report.md'}, {out / 'report.csv'}"
                 + (f", {len(figures)} figures in {out / 'figures'}" if figures else "")
                 + (f", {len(grids)} sample grids in {out / GRIDS_DIR}" if grids else ""))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit status 0; 2 with one line for bad input (a flag, no readable run); 1 with one line for anything
    unexpected (its traceback with HYDRA_FULL_ERROR=1, as for ganbench). A malformed run is a warning."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:   # --help (0), or argparse's one-line error (2)
        return done.code if isinstance(done.code, int) else 2
    try:
        print(run_report(args))
    except GanbenchError as err:
        print(f"ganbench-report: error: {err}", file=sys.stderr)
        return 2
    except Exception as ex:  # noqa: BLE001 - one line instead of a traceback, as ganbench does
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from ganbench.errors import one_line_error  # noqa: PLC0415 - only for the unexpected

        print(f"ganbench-report: error: {one_line_error(ex)} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
