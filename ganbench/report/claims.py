"""Paper claims as data: each comparison preset's ``claims:`` list, checked over the runs of a sweep.

A preset (conf/experiment/*.yaml) states the claims of its source next to its protocol, so every run's saved
config carries them and ``ganbench-report`` reads them from the runs it reports. One claim::

    - id: dragan_beats_vanilla_final          # a name for the report
      statement: "Notice that we beat ..."     # the paper's words
      source: "DRAGAN (Kodali et al.) §3.2, Table 1"
      where: {dataset: grid25}                 # optional: only runs whose config key has this value
      arm_key: arm                             # optional: the config key naming a run's arm (default: arm)
      value: final                             # optional: final (default), best or auc of each run's curve
      runs_per_arm: 3                          # optional: the protocol's runs per arm (seeds x instances)
      better: {metric: is_mean, arm: dragan, than: vanilla, by: mean}    # exactly one check, below

A ``metric`` may be a list of alternatives (``[is_mean, mnist_is]``: the Inception Score, or the MNIST
classifier score of the CPU stand-in): the first that a selected run reports is checked. The checks (CHECKS):
``better``, ``order``, ``at_least`` / ``at_most``, ``events`` and ``wins``; each docstring gives its rule.
Every check has three outcomes: ``reproduced``, ``not reproduced`` and ``not enough data`` (naming what is
missing), always with the numbers behind it. A run enters with its ``value`` if it is finished (completed or
diverged) or, with ``--at-step N``, was evaluated at step N or later, as in the rest of the report (``events``
reads every run's curve so far). With ``runs_per_arm: N`` the verdict is ``not enough data`` until every arm the
check names (or, naming none, the claim's runs together) has N runs that entered, whatever the check alone
would say, and the line names each arm's count: a sweep still training (2 of BogoNet's 20 instances) cannot
reproduce or refute its claim. ganbench.config.validate_top parses the list when a run starts, so a malformed
claim stops the run in one line instead of failing the report later.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ganbench.report import tables as report
from ganbench.errors import ConfigError, GanbenchError, unknown_key_message

REPRODUCED, NOT_REPRODUCED, NO_DATA = "reproduced", "not reproduced", "not enough data"
VALUES = ("final", "best", "auc")
COMMON_KEYS = ("id", "statement", "source", "where", "arm_key", "value", "runs_per_arm")


@dataclass
class Claim:
    """One parsed claim: its text, which runs it reads, and its check (``kind`` with its ``spec``)."""

    id: str
    statement: str
    source: str
    kind: str
    spec: dict
    where: Dict[str, str] = field(default_factory=dict)
    arm_key: str = "arm"
    value: str = "final"
    runs_per_arm: Optional[int] = None   # the protocol's runs per arm; fewer entered: not enough data

    def arms(self) -> List[str]:
        """The arms the check names, in order (``best`` names none: it picks among all)."""
        def listed(value):
            return [value] if isinstance(value, str) else list(value or [])

        names = [self.spec.get("arm"), *listed(self.spec.get("than")), *listed(self.spec.get("arms")),
                 *listed(self.spec.get("over"))]
        return list(dict.fromkeys(n for n in names if n not in (None, "best")))


@dataclass
class Verdict:
    claim: Claim
    status: str
    numbers: str

    def line(self) -> str:
        return f"claim {self.claim.id} ({self.claim.source}): {self.status}: {self.numbers}"


# ---------------------------------------------------------------------------------------------
# the cells a check reads


@dataclass
class Cell:
    """The values of one metric over the selected runs of one arm (or of all selected runs)."""

    name: str
    values: List[float]
    runs: int          # selected runs of the arm, with or without a value

    @property
    def stats(self) -> Tuple[int, float, float]:
        return report.mean_se(self.values)

    def text(self, with_se: bool = True) -> str:
        n, mean, se = self.stats
        if self.runs == 0:
            return f"{self.name}: no run"
        if n == 0:
            return f"{self.name} – (0/{self.runs} runs with a value)"
        body = f"{mean:.4g}" if (n == 1 or not with_se) else f"{mean:.4g} ± {se:.2g}"
        return f"{self.name} {body} (n={n}" + (f"/{self.runs})" if n < self.runs else ")")


class Context:
    """The runs one claim reads (its ``where`` applied), and how to get their values."""

    def __init__(self, claim: Claim, runs: Sequence["report.Run"], at_step: Optional[float]):
        self.claim, self.at_step = claim, at_step
        self.runs = [r for r in runs if all(r.label_value(k) == v for k, v in claim.where.items())]

    def metric(self, names) -> str:
        """The first of ``names`` (one name or a list of alternatives) that a selected run reports."""
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            if any(name in r.metric_names() for r in self.runs):
                return name
        return names[0]

    def arm(self, run: "report.Run") -> str:
        return run.label_value(self.claim.arm_key)

    def value(self, run: "report.Run", metric: str) -> Optional[float]:
        if not run.reached(self.at_step):
            return None
        getter = {"final": report.Run.final, "best": report.Run.best, "auc": report.Run.auc}[self.claim.value]
        return getter(run, metric, self.at_step)

    def cell(self, metric: str, arm: Optional[str] = None) -> Cell:
        members = [r for r in self.runs if arm is None or self.arm(r) == arm]
        values = [v for v in (self.value(r, metric) for r in members) if v is not None]
        return Cell(arm if arm is not None else metric, values, len(members))

    def higher(self, metric: str) -> bool:
        return report.higher_is_better(self.runs, metric)

    def arms(self) -> List[str]:
        return sorted({self.arm(r) for r in self.runs})


def _beats(a: Tuple[int, float, float], b: Tuple[int, float, float], higher: bool, by: str) -> bool:
    """a better than b: by ``mean``, m_a > m_b (higher is better) or m_a < m_b; by ``se``, the intervals
    m ± SE do not overlap, m_a - SE_a > m_b + SE_b (or m_a + SE_a < m_b - SE_b)."""
    (_, ma, sa), (_, mb, sb) = a, b
    if by == "se":
        return ma - sa > mb + sb if higher else ma + sa < mb - sb
    return ma > mb if higher else ma < mb


def _needed(by: str) -> int:
    return 2 if by == "se" else 1  # an SE needs two values


def _head(ctx: Context, metric: str, by: str) -> str:
    stat = "mean ± SE" if by == "se" else "mean"
    return f"{metric} ({ctx.claim.value}, {stat} over runs; {'higher' if ctx.higher(metric) else 'lower'} is better)"


# ---------------------------------------------------------------------------------------------
# the checks


def check_better(ctx: Context, spec: dict) -> Tuple[str, str]:
    """``better: {metric, arm, than: arm or [arms], by: se|mean}``: the arm beats every arm of ``than``.

    by se: its interval mean ± SE (SE = s/√n) lies entirely on the better side of each other arm's, i.e.
    m_a - SE_a > m_b + SE_b for a higher-is-better metric; by mean: m_a > m_b. Not enough data: an arm with
    fewer than 2 values (se) or none (mean)."""
    metric, by = ctx.metric(spec["metric"]), spec["by"]
    others = [spec["than"]] if isinstance(spec["than"], str) else list(spec["than"])
    cells = [ctx.cell(metric, spec["arm"])] + [ctx.cell(metric, o) for o in others]
    numbers = _head(ctx, metric, by) + ": " + " vs ".join(c.text(by == "se") for c in cells)
    short = [c.name for c in cells if c.stats[0] < _needed(by)]
    if short:
        return NO_DATA, numbers + f"; fewer than {_needed(by)} values: {', '.join(short)}"
    higher = ctx.higher(metric)
    lost = [c.name for c in cells[1:] if not _beats(cells[0].stats, c.stats, higher, by)]
    if lost:
        return NOT_REPRODUCED, numbers + f"; {cells[0].name} does not beat {', '.join(lost)}"
    return REPRODUCED, numbers


def check_order(ctx: Context, spec: dict) -> Tuple[str, str]:
    """``order: {metric, arms: [worst, ..., best], by: se|mean}`` or ``{metrics: [m_1, ..., m_k], by}``:
    each entry beats the one before it (``better``'s rule between neighbours), e.g. first-order < unrolled <
    optimal success. With ``metrics`` every entry is a metric over all selected runs (one run may report them
    all: the GMM lab's <method>_success); the direction is the first metric's."""
    by = spec["by"]
    if "metrics" in spec:
        metrics = [ctx.metric(m) for m in spec["metrics"]]
        cells = [ctx.cell(m) for m in metrics]
        higher, head = ctx.higher(metrics[0]), f"{ctx.claim.value} values, {'mean ± SE' if by == 'se' else 'mean'}"
    else:
        metric = ctx.metric(spec["metric"])
        cells = [ctx.cell(metric, a) for a in spec["arms"]]
        higher, head = ctx.higher(metric), _head(ctx, metric, by)
    sign = " < " if higher else " > "
    numbers = head + ": " + sign.join(c.text(by == "se") for c in cells)
    short = [c.name for c in cells if c.stats[0] < _needed(by)]
    if short:
        return NO_DATA, numbers + f"; fewer than {_needed(by)} values: {', '.join(short)}"
    broken = [f"{a.name} vs {b.name}" for a, b in zip(cells, cells[1:]) if not _beats(b.stats, a.stats, higher, by)]
    if broken:
        return NOT_REPRODUCED, numbers + f"; out of order: {', '.join(broken)}"
    return REPRODUCED, numbers


def _threshold(ctx: Context, spec: dict, at_least: bool) -> Tuple[str, str]:
    metric = ctx.metric(spec["metric"])
    arm, bound = spec.get("arm"), float(spec["value"])
    if arm == "best":
        cells = [c for c in (ctx.cell(metric, a) for a in ctx.arms()) if c.stats[0] > 0]
        if not cells:
            return NO_DATA, f"{metric} ({ctx.claim.value}): no arm has a value"
        sign = 1.0 if ctx.higher(metric) else -1.0
        cell = max(cells, key=lambda c: sign * c.stats[1])
        label = f"best arm {cell.text()}"
    else:
        cell = ctx.cell(metric, arm)
        if arm is None:
            cell.name = "all runs"
        label = cell.text()
    relation = ">=" if at_least else "<="
    numbers = f"{metric} ({ctx.claim.value}, mean over runs): {label}; claim: {relation} {bound:g}"
    n, mean, _ = cell.stats
    if n == 0:
        return NO_DATA, numbers
    holds = mean >= bound if at_least else mean <= bound
    return (REPRODUCED if holds else NOT_REPRODUCED), numbers


def check_at_least(ctx: Context, spec: dict) -> Tuple[str, str]:
    """``at_least: {metric, arm, value}``: the arm's mean over its runs (seeds) is >= value. ``arm: best`` takes the arm
    with the best mean (by the metric's direction); no ``arm``: every selected run. Needs one value."""
    return _threshold(ctx, spec, at_least=True)


def check_at_most(ctx: Context, spec: dict) -> Tuple[str, str]:
    """``at_most: {metric, arm, value}``: the arm's mean over its runs is <= value (``at_least``'s arms)."""
    return _threshold(ctx, spec, at_least=False)


def drop_after_peak(values: Sequence[float]) -> float:
    """The largest fall of a curve below an earlier value: max over j of (max_{i<j} v_i) - v_j (0 if none)."""
    peak, drop = -math.inf, 0.0
    for v in values:
        drop = max(drop, peak - v)
        peak = max(peak, v)
    return drop


EVENT_KINDS: Dict[str, Callable[[Sequence[float]], float]] = {"drop_after_peak": drop_after_peak}


def check_events(ctx: Context, spec: dict) -> Tuple[str, str]:
    """``events: {metric, kind: drop_after_peak, size, arm, in_at_least: k}`` (or ``in_at_most: k``): the
    number of the arm's runs whose curve (metrics.jsonl, up to --at-step) has an event, a drop of >= size
    below an earlier peak, is >= k (<= k; ``in_at_most: 0``: no run collapses). A run takes part with two
    evaluations or more; not enough data: fewer than k such runs (in_at_least), or fewer than k + 1
    (in_at_most)."""
    metric, size, arm = ctx.metric(spec["metric"]), float(spec["size"]), spec["arm"]
    measure = EVENT_KINDS[spec["kind"]]
    members = [r for r in ctx.runs if ctx.arm(r) == arm]
    # A run still training takes part only up to a step it has reached (--at-step): a curve cut short can
    # neither show that the run never collapses nor that it does not collapse later.
    unfinished = [r for r in members if not r.reached(ctx.at_step)]
    drops = []
    for run in (r for r in members if r.reached(ctx.at_step)):
        values = run.series(metric, ctx.at_step)[2]
        if len(values) >= 2:
            drops.append((run.seed or "–", measure(values)))
    hits = [s for s, d in drops if d >= size]
    at_least = "in_at_least" in spec
    k = int(spec["in_at_least"] if at_least else spec["in_at_most"])
    numbers = (f"{metric} curves of {arm}: {len(hits)} of {len(drops)} with a {spec['kind']} >= {size:g} "
               f"(largest per seed: " + (", ".join(f"{s}: {d:.3g}" for s, d in drops) or "none") + ")"
               + f"; claim: in {'at least' if at_least else 'at most'} {k}")
    if unfinished:
        numbers += (f"; {len(unfinished)} of the arm's runs still training take no part"
                    + ("" if ctx.at_step is not None else " (compare at a step they reached: --at-step)"))
    if len(drops) < (k if at_least else k + 1) or not drops:
        return NO_DATA, numbers + f"; {len(drops)} of the arm's {len(members)} runs have a curve of 2+ evaluations"
    holds = len(hits) >= k if at_least else len(hits) <= k
    return (REPRODUCED if holds else NOT_REPRODUCED), numbers


def check_wins(ctx: Context, spec: dict) -> Tuple[str, str]:
    """``wins: {metric, arm, over: [arms], per: key, at_least: N}`` (or ``share: f``): per instance (the
    value of config key ``per``, e.g. arch.seed for BogoNet), the arm wins when its mean over the instance's
    seeds beats every arm of ``over`` (mean rule); the claim holds when it wins on >= N instances (on a
    fraction >= f of the instances where every arm has a value). Not enough data: no such instance, or fewer
    than N."""
    metric, arm, per = ctx.metric(spec["metric"]), spec["arm"], spec["per"]
    over = [spec["over"]] if isinstance(spec["over"], str) else list(spec["over"])
    higher = ctx.higher(metric)
    instances: Dict[str, Dict[str, List[float]]] = {}
    for run in ctx.runs:
        value = ctx.value(run, metric)
        if value is not None:
            instances.setdefault(run.label_value(per), {}).setdefault(ctx.arm(run), []).append(value)
    compared = {k: v for k, v in instances.items() if all(a in v for a in [arm, *over])}
    wins = [k for k, v in compared.items()
            if all(_beats(report.mean_se(v[arm]), report.mean_se(v[o]), higher, "mean") for o in over)]
    if "share" in spec:
        goal, need = f"a share >= {float(spec['share']):g}", 1
    else:
        goal, need = f">= {int(spec['at_least'])}", int(spec["at_least"])
    numbers = (f"{metric} ({ctx.claim.value}, mean over an instance's seeds): {arm} beats {', '.join(over)} on "
               f"{len(wins)} of {len(compared)} instances ({per}) with every arm; claim: {goal}")
    if len(compared) < need or not compared:
        return NO_DATA, numbers + f"; {len(instances)} instances have some value"
    holds = (len(wins) / len(compared) >= float(spec["share"])) if "share" in spec else len(wins) >= need
    return (REPRODUCED if holds else NOT_REPRODUCED), numbers


# kind -> (check, required keys, optional keys)
CHECKS: Dict[str, Tuple[Callable[[Context, dict], Tuple[str, str]], Tuple[str, ...], Tuple[str, ...]]] = {
    "better": (check_better, ("metric", "arm", "than", "by"), ()),
    "order": (check_order, ("by",), ("metric", "arms", "metrics")),
    "at_least": (check_at_least, ("metric", "value"), ("arm",)),
    "at_most": (check_at_most, ("metric", "value"), ("arm",)),
    "events": (check_events, ("metric", "kind", "size", "arm"), ("in_at_least", "in_at_most")),
    "wins": (check_wins, ("metric", "arm", "over", "per"), ("at_least", "share")),
}


# ---------------------------------------------------------------------------------------------
# parsing and evaluation


def parse(node, index: int) -> Claim:
    """One claim from its YAML mapping; a malformed one is a one-line ConfigError naming the key."""
    at = f"claims[{index}]"
    if not isinstance(node, dict):
        raise ConfigError(f"{at}: must be a mapping with id, statement, source and one check of "
                          f"{', '.join(CHECKS)} (got {node!r})")
    kinds = [k for k in node if k in CHECKS]
    unknown = [k for k in node if k not in CHECKS and k not in COMMON_KEYS]
    if unknown:
        raise ConfigError(unknown_key_message(f"{at}.{unknown[0]}", [*COMMON_KEYS, *CHECKS]))
    for key in ("id", "statement", "source"):
        if not isinstance(node.get(key), str) or not node[key].strip():
            raise ConfigError(f"{at}.{key}: required, a non-empty string")
    at = f"claims[{index}] ({node['id']})"
    if len(kinds) != 1:
        raise ConfigError(f"{at}: needs exactly one check of {', '.join(CHECKS)} (got {', '.join(kinds) or 'none'})")
    kind, spec = kinds[0], node[kinds[0]]
    _, required, optional = CHECKS[kind]
    if not isinstance(spec, dict):
        raise ConfigError(f"{at}.{kind}: must be a mapping of {', '.join(required + optional)}")
    missing = [k for k in required if k not in spec]
    extra = [k for k in spec if k not in required + optional]
    if missing:
        raise ConfigError(f"{at}.{kind}.{missing[0]}: required; {kind} takes {', '.join(required + optional)}")
    if extra:
        raise ConfigError(f"{at}.{kind}.{extra[0]}: unknown key; {kind} takes {', '.join(required + optional)}")
    _check_spec(at, kind, spec)
    value = node.get("value", "final")
    if value not in VALUES:
        raise ConfigError(f"{at}.value: unknown option '{value}'; allowed: {', '.join(VALUES)}")
    where = node.get("where") or {}
    if not isinstance(where, dict):
        raise ConfigError(f"{at}.where: must be a mapping of config keys to values, e.g. {{dataset: grid25}}")
    runs_per_arm = node.get("runs_per_arm")
    if runs_per_arm is not None and (isinstance(runs_per_arm, bool) or not isinstance(runs_per_arm, int)
                                     or runs_per_arm < 1):
        raise ConfigError(f"{at}.runs_per_arm: must be a whole number >= 1, the protocol's runs per arm "
                          f"(got {runs_per_arm!r})")
    return Claim(id=node["id"], statement=node["statement"].strip(), source=node["source"], kind=kind,
                 spec=dict(spec), where={str(k): str(v) for k, v in where.items()},
                 arm_key=str(node.get("arm_key", "arm")), value=value, runs_per_arm=runs_per_arm)


def _check_spec(at: str, kind: str, spec: dict) -> None:
    """The values of a check's keys (which keys it has was checked by ``parse``)."""
    if "by" in spec and spec["by"] not in ("se", "mean"):
        raise ConfigError(f"{at}.{kind}.by: unknown option '{spec['by']}'; allowed: se, mean")
    if kind == "order" and ("metrics" in spec) == ("arms" in spec or "metric" in spec):
        raise ConfigError(f"{at}.order: give either metric and arms (worst first) or metrics (worst first)")
    if kind == "order" and len(spec.get("arms") or spec.get("metrics") or []) < 2:
        raise ConfigError(f"{at}.order.{'metrics' if 'metrics' in spec else 'arms'}: a list of 2 or more")
    if kind == "events":
        if spec["kind"] not in EVENT_KINDS:
            raise ConfigError(f"{at}.events.kind: unknown option '{spec['kind']}'; allowed: {', '.join(EVENT_KINDS)}")
        if ("in_at_least" in spec) == ("in_at_most" in spec):
            raise ConfigError(f"{at}.events: give exactly one of in_at_least, in_at_most")
    if kind == "wins" and ("at_least" in spec) == ("share" in spec):
        raise ConfigError(f"{at}.wins: give exactly one of at_least (instances), share (fraction of instances)")
    for key in ("value", "size", "share", "at_least", "in_at_least", "in_at_most"):
        if key in spec and (isinstance(spec[key], bool) or not isinstance(spec[key], (int, float))):
            raise ConfigError(f"{at}.{kind}.{key}: must be a number (got {spec[key]!r})")


def parse_all(nodes) -> List[Claim]:
    """A preset's ``claims:`` list; ids must be unique."""
    if not isinstance(nodes, list):
        raise ConfigError(f"claims: must be a list of claims (got {nodes!r})")
    claims = [parse(node, i) for i, node in enumerate(nodes)]
    ids = [c.id for c in claims]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(f"claims: id '{twice[0]}' given twice; each claim needs its own id")
    return claims


def evaluate(claim: Claim, runs: Sequence["report.Run"], at_step: Optional[float] = None) -> Verdict:
    """The claim's verdict over ``runs`` (its ``where`` applied here)."""
    ctx = Context(claim, runs, at_step)
    if not ctx.runs:
        where = " ".join(f"{k}={v}" for k, v in claim.where.items())
        return Verdict(claim, NO_DATA, f"no run matches {where or 'the claim'}")
    status, numbers = CHECKS[claim.kind][0](ctx, claim.spec)
    if claim.runs_per_arm is not None:
        # The check's numbers are shown either way; its verdict stands only over the whole protocol.
        arms = claim.arms()
        counts = ([(a, sum(ctx.arm(r) == a and r.reached(at_step) for r in ctx.runs)) for a in arms] if arms
                  else [("all runs", sum(r.reached(at_step) for r in ctx.runs))])
        if any(n < claim.runs_per_arm for _, n in counts):
            status = NO_DATA
            numbers += (f"; the protocol has {claim.runs_per_arm} runs per arm, entered so far: "
                        + ", ".join(f"{a} {n}" for a, n in counts))
    return Verdict(claim, status, numbers)


def claim_sets(runs: Sequence["report.Run"]) -> List[Tuple[List[Claim], List["report.Run"], str]]:
    """The distinct ``claims`` lists the runs carry in their saved config, each with its runs and the preset
    it came from (the runs' ``experiment``). A run without claims joins the one list that runs of its experiment
    carry; otherwise it takes no part. Raises ConfigError (one line,
    naming a run) for a malformed list, before the report writes anything."""
    sets: Dict[str, List["report.Run"]] = {}
    without: List["report.Run"] = []
    for run in runs:
        nodes = (run.config or {}).get("claims")
        if nodes:
            sets.setdefault(json.dumps(nodes, sort_keys=True), []).append(run)
        else:
            without.append(run)
    # A run recorded before its preset stated claims (its config has none) is still a run of that preset: it
    # joins the one claims list carried by the other runs of its experiment.
    for run in without:
        experiment = run.label_value("experiment")
        homes = [m for m in sets.values() if experiment != "?" and any(r.label_value("experiment") == experiment
                                                                        for r in m)]
        if len(homes) == 1:
            homes[0].append(run)
    out = []
    for text, members in sets.items():
        try:
            claims = parse_all(json.loads(text))
        except ConfigError as err:
            raise ConfigError(f"{members[0].path}: {err}") from None
        experiments = sorted({r.label_value("experiment") for r in members} - {"?"})
        out.append((claims, members, ", ".join(experiments) or "?"))
    return out


def section(runs: Sequence["report.Run"], at_step: Optional[float] = None, budget: bool = True,
            given: Optional[Tuple[List[Claim], str]] = None) -> Tuple[List[str], List[str]]:
    """The report's claims section as (text lines, markdown lines); both empty when no run carries claims.

    Per claims list: a header with the counts of each verdict, each claim's line (verdict and numbers) and its
    statement; a warning when the runs carry more than one list; with ``budget``, the toy budget check of
    report.toy_budget_check where the runs have mode counts. ``given`` (claims, preset), from ``ganbench-report
    --claims PRESET``, replaces the lists the runs carry: that preset's claims as conf/ states them now, checked
    over every run (for runs recorded before their preset's claims changed)."""
    if given is not None:
        sets = [(given[0], list(runs), f"{given[1]} (its claims as conf/ states them now: --claims)")]
    else:
        sets = claim_sets(runs)
    text: List[str] = []
    md: List[str] = []
    if len(sets) > 1:
        warning = (f"warning: the runs carry {len(sets)} different claims lists (presets: "
                   f"{'; '.join(e for _, _, e in sets)}); each is checked over its own runs")
        text.append(warning)
        md += [f"**{warning}**", ""]
    at = f" as of generator step {at_step:g}" if at_step is not None else ""
    for claims, members, experiment in sets:
        verdicts = [evaluate(c, members, at_step) for c in claims]
        counts = ", ".join(f"{sum(v.status == s for v in verdicts)} {s}" for s in (REPRODUCED, NOT_REPRODUCED, NO_DATA))
        head = f"claims of experiment={experiment}{at} ({len(members)} run{'s' * (len(members) != 1)}): {counts}"
        text.append(head)
        md += [f"## Claims of experiment={experiment}", "", head + ".", "",
               "| claim | source | statement | verdict | numbers |", "|---|---|---|---|---|"]
        for v in verdicts:
            text += [v.line(), f"  the paper: {v.claim.statement}"]
            md.append("| " + " | ".join(_md(x) for x in (v.claim.id, v.claim.source, v.claim.statement,
                                                           f"**{v.status}**", v.numbers)) + " |")
        md.append("")
        checks = report.toy_budget_check(members, at_step) if budget else []
        text += checks
        md += checks[:1] + [f"- {line.strip()}" for line in checks[1:]] + ([""] if checks else [])
    return text, md


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def log_verdicts(run_dir, logger) -> None:
    """Log the verdicts of the claims a finished run carries, checked over that run alone: the GMM lab's
    report (one run holds every method's numbers). A malformed list is a warning here: the run itself
    succeeded, and ganbench-report names the key."""
    try:
        text, _ = section([report.load_run(Path(run_dir))], budget=False)
    except GanbenchError as err:
        logger.warning("claims: %s", err)
        return
    for line in text:
        logger.info("%s", line)
