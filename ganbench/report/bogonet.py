"""The BogoNet score (DRAGAN paper §3.2, Table 1) from a sweep over algorithms × BogoNet instances.

An *instance* is one random pair of architectures (G, D), identified by the config value ``INSTANCE_KEY``
(``arch.seed``: the seed the BogoNet sampler draws G and D from); an *algorithm* is every override but
``seed`` and the instance key (objective, penalty, ...), less those all runs share. Per algorithm and over
the instances it was trained on (Table 1's form):

- final score: mean and sample std (n - 1) of the score's final value;
- area under the curve: mean and std of AUC = Σ_k (x_{k+1} - x_k)(v_k + v_{k+1})/2 over the run's
  evaluations (x_k, v_k), unnormalised, as the paper's "area under the score-vs-time curve". ``x`` is the
  wall-clock time in minutes (``--auc-x time``, the paper's) or generator steps in thousands (``--auc-x
  step``: immune to machine load, which wall time is not on a shared machine). The area spans the run's
  first to last evaluation; a run with a single evaluation has no area;
- qualitative score (with ``--judge-score``): see ganbench/report/judge.py.

Per instance and pair of algorithms, which one is ahead (on the final score and on the AUC, by the metric's
direction), and a two-sided sign test over the instances where both have a value: p = P(|W - n/2| ≥
|w - n/2|), W ~ Binomial(n, 1/2), n the instances without a tie (``scipy.stats.binomtest``). Two values
tie when |a - b| ≤ ``tie_rtol``·max(|a|, |b|) (``--tie-rtol``, default 1e-3, our choice: far below the
sampling noise of any score here, e.g. mnist_is varies by about 2 % between splits of real digits, yet it
keeps two collapsed runs at 1.000000 and 1.000001 from counting as a win).

A cell of several runs (seeds) of one algorithm on one instance takes their mean. Finished runs (completed,
diverged) count; a diverged run keeps the values of its last evaluations.
"""

from __future__ import annotations

import argparse
import csv
import math
from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple

from ganbench.errors import GanbenchError
from ganbench.report import claims
from ganbench.report.tables import format_markdown_table, format_text_table, higher_is_better

# The config value naming a BogoNet instance (the BogoNet arch's seed for drawing G and D). One constant:
# change it here (or pass --instance-key) if the arch names its instance differently.
INSTANCE_KEY = "arch.seed"
# The score a BogoNet table uses when --score is not given: the first of these with a finite value in some
# run. The Inception score where its weights exist (the paper's), else the MNIST classifier score, else the
# mode metrics of Stacked MNIST and the toys.
HEADLINE = ("is_mean", "mnist_is", "stacked_modes", "modes", "hq_pct", "fid", "energy")
TIE_RTOL = 1e-3
# The table warns when the algorithms' median time spans differ by more than this factor (our choice: 25 %).
SPAN_RATIO = 1.25
AUC_X = {"time": ("wall-clock minutes", 1 / 60), "step": ("thousands of generator steps", 1 / 1000)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The BogoNet table's and the judge's options of ganbench-report."""
    p.add_argument("--score", default=None, metavar="METRIC",
                   help="--table bogonet / --judge: the score (default: the first of " + ", ".join(HEADLINE)
                   + " that some run has)")
    p.add_argument("--auc-x", choices=sorted(AUC_X), default=None,
                   help="--table bogonet / --judge: x axis of the score curve and its area: time (wall-clock "
                   "minutes, the paper's) or step (thousands of generator steps)")
    p.add_argument("--tie-rtol", type=float, default=None, metavar="R",
                   help=f"--table bogonet: two values tie when |a - b| <= R·max(|a|, |b|) (default {TIE_RTOL:g})")
    p.add_argument("--instance-key", default=None, metavar="KEY",
                   help=f"--table bogonet / --judge: the config value naming a BogoNet instance (default {INSTANCE_KEY})")


def check_args(args: argparse.Namespace) -> None:
    """One mode per call, and no option of another mode (it would be ignored); fills the defaults of
    --auc-x (time) and --instance-key (INSTANCE_KEY)."""
    table, judging, scoring = getattr(args, "table", None), getattr(args, "judge", False), getattr(args, "judge_score", None)
    if judging and (table or scoring):
        raise GanbenchError("--judge writes the judging page only; give --table / --judge-score in another call")
    if scoring and table not in (None, "bogonet"):
        raise GanbenchError(f"--judge-score goes with --table bogonet (its qual. score column) or alone, not --table {table}")
    bogonet_mode = table == "bogonet" or judging
    for flag, value in (("--score", getattr(args, "score", None)), ("--auc-x", getattr(args, "auc_x", None)),
                        ("--instance-key", getattr(args, "instance_key", None))):
        if value is not None and not bogonet_mode:
            raise GanbenchError(f"{flag}: only with --table bogonet or --judge")
    tol = getattr(args, "tie_rtol", None)
    if tol is not None and table != "bogonet":
        raise GanbenchError("--tie-rtol: only with --table bogonet")
    if tol is not None and not (0 <= tol < 1):
        raise GanbenchError(f"--tie-rtol: must be in [0, 1), got {tol:g}")
    args.tie_rtol = TIE_RTOL if tol is None else tol
    for flag, value in (("--judge-pair", getattr(args, "judge_pair", None)),
                        ("--judge-seed", getattr(args, "judge_seed", None))):
        if value is not None and not judging:
            raise GanbenchError(f"{flag}: only with --judge")
    args.auc_x = getattr(args, "auc_x", None) or "time"
    args.instance_key = getattr(args, "instance_key", None) or INSTANCE_KEY


# ---------------------------------------------------------------------------------------------
# cells: algorithm × instance


def algorithm_key(run, instance_key: str) -> Tuple[Tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in run.overrides.items() if k not in ("seed", instance_key)))


def _instance_order(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def cells(runs, instance_key: str = INSTANCE_KEY):
    """({algorithm label: {instance: runs}}, algorithm labels sorted, instances sorted). A label leaves out
    the overrides every run shares (experiment=..., a budget) when there are several algorithms. Raises GanbenchError when a run names no
    instance."""
    by_key: Dict[Tuple, Dict[str, list]] = {}
    for run in runs:
        inst = run.label_value(instance_key)
        if inst in ("?", "None"):
            raise GanbenchError(f"run {run.path} has no {instance_key} (the BogoNet instance); give --instance-key "
                                f"KEY naming the config value that identifies an instance")
        by_key.setdefault(algorithm_key(run, instance_key), {}).setdefault(inst, []).append(run)
    # One algorithm keeps its full label (nothing to tell apart, but a name to show).
    shared = set.intersection(*(set(k) for k in by_key)) if len(by_key) > 1 else set()
    label = {k: " ".join(f"{a}={b}" for a, b in k if (a, b) not in shared) or "all" for k in by_key}
    out = {label[k]: v for k, v in by_key.items()}
    instances = sorted({i for v in out.values() for i in v}, key=_instance_order)
    return out, sorted(out), instances


def area(xs: Sequence[float], vs: Sequence[float]) -> Optional[float]:
    """Trapezoid area Σ_k (x_{k+1} - x_k)(v_k + v_{k+1})/2; None with fewer than two points."""
    if len(xs) < 2:
        return None
    return sum((xs[k + 1] - xs[k]) * (vs[k] + vs[k + 1]) / 2 for k in range(len(xs) - 1))


def curve(run, metric: str, x: str, at_step: Optional[float] = None) -> Tuple[List[float], List[float]]:
    """(x, score) of the run's finite evaluations; x in AUC_X units (minutes or thousands of steps)."""
    steps, times, values = run.series(metric, at_step)
    scale = AUC_X[x][1]
    pts = [((t if x == "time" else s) * scale, v) for s, t, v in zip(steps, times, values)
           if math.isfinite(t if x == "time" else s)]
    return [p[0] for p in pts], [p[1] for p in pts]


def run_auc(run, metric: str, x: str, at_step: Optional[float] = None) -> Optional[float]:
    return area(*curve(run, metric, x, at_step))


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def cell_values(members, metric: str, x: str, at_step: Optional[float] = None) -> Dict[str, Optional[float]]:
    """{"final", "auc"} of one algorithm on one instance: the mean over its finished runs with a value."""
    done = [r for r in members if r.reached(at_step)]
    finals = [v for v in (r.final(metric, at_step) for r in done) if v is not None]
    aucs = [v for v in (run_auc(r, metric, x, at_step) for r in done) if v is not None]
    spans = [xs[-1] - xs[0] for xs in (curve(r, metric, x, at_step)[0] for r in done) if len(xs) > 1]
    return {"final": _mean(finals), "auc": _mean(aucs), "span": _mean(spans), "runs": len(members),
            "finished": len(done)}


def pick_score(runs, requested: Optional[str]) -> str:
    have = {m for r in runs for m in r.metric_names()}
    if requested:
        if requested not in have:
            raise GanbenchError(f"--score {requested}: no such metric (have: {', '.join(sorted(have)) or 'none'})")
        return requested
    for m in HEADLINE:
        if any(r.final(m) is not None for r in runs):
            return m
    raise GanbenchError(f"--table bogonet: no run has a value of any of {', '.join(HEADLINE)}; give --score METRIC "
                        f"(have: {', '.join(sorted(have)) or 'none'})")


# ---------------------------------------------------------------------------------------------
# the tables


def sign_test(wins_a: int, wins_b: int) -> Optional[float]:
    """Two-sided sign test: binomtest(wins_a, wins_a + wins_b, 1/2).pvalue; None without a decided instance."""
    n = wins_a + wins_b
    if n == 0:
        return None
    from scipy.stats import binomtest  # noqa: PLC0415 - keeps `ganbench-report --help` fast

    return float(binomtest(wins_a, n, 0.5, alternative="two-sided").pvalue)


def _fmt(x: Optional[float], digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _sample_std(values: Sequence[float]) -> Optional[float]:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def bogonet(runs, metric: str, x: str = "time", instance_key: str = INSTANCE_KEY,
            at_step: Optional[float] = None, qual: Optional[Dict[str, float]] = None,
            tie_rtol: float = TIE_RTOL) -> dict:
    """Everything the BogoNet report shows: {"algorithms", "instances", "values": {alg: {inst: cell}},
    "table": rows (Table 1), "pairs": [pair summaries], "per_instance": rows, "notes"}."""
    by_alg, algs, instances = cells(runs, instance_key)

    higher = higher_is_better(runs, metric)
    values = {a: {i: cell_values(by_alg[a].get(i, []), metric, x, at_step) for i in instances if i in by_alg[a]}
              for a in algs}
    header = ["algorithm", "instances", "final mean", "final std", "AUC mean", "AUC std", "qual. score"]
    table = [header]
    notes = []
    for a in algs:
        finals = [c["final"] for c in values[a].values() if c["final"] is not None]
        aucs = [c["auc"] for c in values[a].values() if c["auc"] is not None]
        n = len(values[a])
        count = str(len(finals)) if len(finals) == n else f"{len(finals)} of {n}"
        table.append([a, count, _fmt(_mean(finals)), _fmt(_sample_std(finals)), _fmt(_mean(aucs), 2),
                      _fmt(_sample_std(aucs), 2), _fmt(qual.get(a), 2) if qual and a in qual else "–"])
        missing = [i for i, c in values[a].items() if c["final"] is None]
        if missing:
            notes.append(f"{a}: no final {metric} on instance(s) {', '.join(missing)} (not finished, or null)")
        no_area = [i for i, c in values[a].items() if c["final"] is not None and c["auc"] is None]
        if no_area:
            notes.append(f"{a}: no AUC on instance(s) {', '.join(no_area)} (fewer than two evaluations)")
        several = [i for i, c in values[a].items() if c["runs"] > 1]
        if several:
            notes.append(f"{a}: instance(s) {', '.join(several)} have several runs; their mean is the cell's value")
    spans = {a: sorted(c["span"] for c in values[a].values() if c["span"] is not None) for a in algs}
    medians = {a: v[len(v) // 2] for a, v in spans.items() if v}
    if x == "time" and len(medians) > 1 and min(medians.values()) > 0 \
            and max(medians.values()) > SPAN_RATIO * min(medians.values()):
        notes.append("the curves span different wall-clock times (median minutes from first to last evaluation: "
                     + ", ".join(f"{a} {m:.3g}" for a, m in medians.items()) + "): at equal scores a slower "
                     "algorithm gets a larger area under --auc-x time; --auc-x step compares at equal steps")
    absent = {a: [i for i in instances if i not in values[a]] for a in algs}
    for a, lst in absent.items():
        if lst:
            notes.append(f"{a}: not run on instance(s) {', '.join(lst)}")

    def ahead(a: str, b: str, i: str, kind: str) -> Optional[str]:
        va = values[a].get(i, {}).get(kind)
        vb = values[b].get(i, {}).get(kind)
        if va is None or vb is None:
            return None
        if abs(va - vb) <= tie_rtol * max(abs(va), abs(vb)):
            return "tie"
        return a if (va > vb) == higher else b

    pairs = []
    for a, b in combinations(algs, 2):
        for kind, title in (("final", f"final {metric}"), ("auc", "AUC")):
            marks = [ahead(a, b, i, kind) for i in instances]
            wa, wb, ties = marks.count(a), marks.count(b), marks.count("tie")
            pairs.append({"a": a, "b": b, "kind": kind, "title": title, "wins_a": wa, "wins_b": wb, "ties": ties,
                          "n": wa + wb + ties, "p": sign_test(wa, wb)})
    per_header = ["instance"] + [f"{a} final" for a in algs] + [f"{a} AUC" for a in algs]
    per_header += [f"ahead ({k}): {a} vs {b}" for a, b in combinations(algs, 2) for k in ("final", "AUC")]
    per_instance = [per_header]
    for i in instances:
        row = [i] + [_fmt(values[a].get(i, {}).get("final")) for a in algs]
        row += [_fmt(values[a].get(i, {}).get("auc"), 2) for a in algs]
        for a, b in combinations(algs, 2):
            row += [ahead(a, b, i, k) or "–" for k in ("final", "auc")]
        per_instance.append(row)
    return {"algorithms": algs, "instances": instances, "values": values, "table": table, "pairs": pairs,
            "per_instance": per_instance, "notes": notes, "metric": metric, "higher": higher}


def pair_line(p: dict) -> str:
    pv = "–" if p["p"] is None else f"{p['p']:.4g}"
    return (f"{p['title']}: {p['a']} ahead on {p['wins_a']}, {p['b']} on {p['wins_b']}, ties {p['ties']} "
            f"(of {p['n']} instances with both); two-sided sign test p = {pv}")


def describe(metric: str, x: str, higher: bool, instance_key: str, tie_rtol: float = TIE_RTOL) -> str:
    return (f"score: {metric} ({'higher' if higher else 'lower'} is better); instances: {instance_key}; final = "
            f"the run's last evaluation; AUC = trapezoid area under {metric} against {AUC_X[x][0]} from the first "
            f"to the last evaluation (--auc-x {x}); mean and sample std (n-1) over instances; ties within "
            f"a relative {tie_rtol:g} (--tie-rtol)")


def run_bogonet_table(args: argparse.Namespace, runs, qual: Optional[Dict[str, float]] = None) -> str:
    """``--table bogonet``; ``qual``: the qualitative score per algorithm, when judgements were given
    (``--judge-score``, ganbench/report/judge.py)."""
    metric = pick_score(runs, args.score)
    result = bogonet(runs, metric, args.auc_x, args.instance_key, args.at_step, qual, args.tie_rtol)
    given = getattr(args, "given_claims", None)   # ganbench-report --claims PRESET (composed by report.cli)
    claim_text, claim_md = claims.section(runs, args.at_step, budget=False, given=given)   # before writing
    out = args.out or args.sweep_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    text = describe(metric, args.auc_x, result["higher"], args.instance_key, args.tie_rtol)
    if args.at_step is not None:
        text += f"; as of generator step {args.at_step:g}"
    pairs = [pair_line(p) for p in result["pairs"]]
    md = ["# BogoNet score (DRAGAN paper, Table 1)", "", "Sweeps: " + ", ".join(f"`{d}`" for d in args.sweep_dirs),
          "", text + ".", "", format_markdown_table(result["table"]), ""]
    md += [f"- {n}" for n in result["notes"]] + [""]
    md += ["## Pairwise, per instance", "", format_markdown_table(result["per_instance"]), ""]
    md += [f"- {line}" for line in pairs] + [""] + claim_md
    (out / "bogonet_table.md").write_text("\n".join(md) + "\n")
    with (out / "bogonet_instances.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algorithm", "instance", "runs", "finished", f"{metric}_final", f"{metric}_auc_{args.auc_x}"])
        for a in result["algorithms"]:
            for i, c in result["values"][a].items():
                w.writerow([a, i, c["runs"], c["finished"], "" if c["final"] is None else repr(c["final"]),
                            "" if c["auc"] is None else repr(c["auc"])])
    lines = [f"{len(runs)} runs, {len(result['instances'])} instances, {len(result['algorithms'])} algorithms; "
             + text, format_text_table(result["table"]), *result["notes"], "",
             "per instance:", format_text_table(result["per_instance"]), *pairs, *claim_text,
             f"wrote {out / 'bogonet_table.md'}, {out / 'bogonet_instances.csv'}"]
    return "\n".join(lines)


__all__ = ["INSTANCE_KEY", "HEADLINE", "add_arguments", "area", "bogonet", "cells", "curve", "pick_score",
           "run_bogonet_table", "sign_test"]
