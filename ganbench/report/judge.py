"""Blind side-by-side judging of BogoNet instances (DRAGAN paper §3.2 and §5.3) and its qualitative score.

``ganbench-report SWEEP --judge`` writes one self-contained HTML page (inline SVG and script, no network)
with, per instance, the score curves of the two algorithms side by side as "A" and "B", each side's
algorithm drawn at random per instance and not shown. The judge splits the instance's 5 points between A
and B (0, 0.5, …, 5 for A, the rest for B; 2.5 each when both do well or both fail, as in the paper) and
saves the judgement as JSON from the page (a download link; the same JSON is shown in the page's
``<pre id="judge-json">``). Which algorithm was on which side is written to a separate key file,
``judge/key-<page id>.json``, next to ``judge/page-<page id>.html``; the page id is a hash of that key, so
a judgement can only be scored against the mapping it was made with.

``ganbench-report SWEEP --judge-score FILE [FILE ...]`` turns the saved judgements into the qualitative
score of Table 1: for algorithm a, over J judges and the I instances,

    qual(a) = 1/J Σ_j Σ_i points_j(i, a),

so the two algorithms' scores add up to 5·I (the paper: 50 instances, two judges, 92.5 + 157.5 = 250), and
per instance the judges' mean split (the paper's Figure 14 splits such as (2.25, 2.75)).

Scripted judging (tests, or a judge pre-filling a page): ``page.html?judge=NAME&splits=a1,a2,...`` clicks,
on load, the radio button "A gets a_k" of the k-th instance in page order and types NAME, exactly as a
judge would; e.g. ``chromium --headless --dump-dom 'file:///…/page-<id>.html?judge=bot&splits=5,2.5'``
prints the page with the judgement in ``<pre id="judge-json">``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import random
import re
import secrets
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ganbench.errors import GanbenchError
from ganbench.report.bogonet import AUC_X, cells, curve, pick_score
from ganbench.report.tables import format_markdown_table, format_text_table, metric_bounds

POINTS = 5.0
STEP = 0.5
CHOICES = [k * STEP for k in range(int(POINTS / STEP) + 1)]   # A's share: 0, 0.5, ..., 5
FORMAT = "ganbench-judge/1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", action="store_true",
                   help="write a blind side-by-side judging page (judge/page-<id>.html, self-contained) of two "
                   "algorithms' score curves per BogoNet instance, sides random and unlabeled; the key of the "
                   "sides goes to judge/key-<id>.json")
    p.add_argument("--judge-pair", nargs=2, default=None, metavar="ALGORITHM",
                   help="--judge: the two algorithms (labels as in --table bogonet) when the sweep has more")
    p.add_argument("--judge-seed", type=int, default=None, metavar="N",
                   help="--judge: seed of the random sides (default: a fresh random seed, recorded in the key)")
    p.add_argument("--judge-score", nargs="+", type=Path, default=None, metavar="FILE",
                   help="score saved judgements (JSON files from the page): the qualitative score per algorithm, "
                   "mean over judges of the points summed over instances; with --table bogonet, its column")


def out_dir(args: argparse.Namespace) -> Path:
    return args.out or args.sweep_dirs[0]


def _share(x: float) -> str:
    return f"{x:g}"


# ---------------------------------------------------------------------------------------------
# the page


def _ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * k / (n - 1) for k in range(n)]


def _svg(series: Sequence[Sequence[tuple]], xr, yr, xlabel: str, ylabel: str, side: str) -> str:
    """One panel: every run's curve as a polyline with its points, axes with ticks; no algorithm name."""
    w, h, ml, mr, mt, mb = 420, 270, 56, 12, 22, 44
    (x0, x1), (y0, y1) = xr, yr
    sx = (lambda x: ml + (x - x0) / (x1 - x0) * (w - ml - mr)) if x1 > x0 else (lambda x: ml + (w - ml - mr) / 2)
    sy = (lambda y: h - mb - (y - y0) / (y1 - y0) * (h - mt - mb)) if y1 > y0 else (lambda y: (h - mb + mt) / 2)
    parts = [f'<svg class="curve" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="curve {side}">',
             f'<text x="{w / 2}" y="15" text-anchor="middle" class="side">{side}</text>',
             f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" class="axis"/>',
             f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h - mb}" class="axis"/>']
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{sx(t):.1f}" y="{h - mb + 14}" text-anchor="middle" class="tick">{t:.3g}</text>')
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{ml}" y1="{sy(t):.1f}" x2="{w - mr}" y2="{sy(t):.1f}" class="grid"/>')
        parts.append(f'<text x="{ml - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">{t:.3g}</text>')
    parts.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 8}" text-anchor="middle" class="label">'
                 f'{html.escape(xlabel)}</text>')
    parts.append(f'<text x="14" y="{(mt + h - mb) / 2}" text-anchor="middle" class="label" '
                 f'transform="rotate(-90 14 {(mt + h - mb) / 2})">{html.escape(ylabel)}</text>')
    for pts in series:
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        if len(pts) > 1:
            parts.append(f'<polyline points="{coords}" class="line"/>')
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" class="dot"/>' for x, y in pts]
    if not any(series):
        parts.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" class="label">no evaluation</text>')
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1000px; }
figure { margin: 0; }
.instance { border-top: 1px solid #ccc; padding: 0.6em 0; }
.panels { display: flex; gap: 1em; flex-wrap: nowrap; }
.axis { stroke: #333; } .grid { stroke: #eee; } .tick { font-size: 10px; fill: #333; }
.label { font-size: 11px; fill: #333; } .side { font-size: 14px; font-weight: bold; }
.line { fill: none; stroke: #1f5fa8; stroke-width: 1.6; } .dot { fill: #1f5fa8; }
fieldset { border: none; padding: 0.2em 0; } label.choice { margin-right: 0.7em; white-space: nowrap; }
.b-share { font-weight: bold; margin-left: 1em; } pre { background: #f6f6f6; padding: 0.6em; }
"""

SCRIPT = r"""
const PAGE_ID = %(page_id)s, INSTANCES = %(instances)s, POINTS = %(points)s;
function collect() {
  const points = {};
  let done = 0;
  INSTANCES.forEach(function (inst, k) {
    const el = document.querySelector('input[name="split-' + k + '"]:checked');
    const out = document.getElementById('share-' + k);
    if (el) {
      const a = parseFloat(el.value);
      points[inst] = {A: a, B: POINTS - a};
      out.textContent = 'A ' + a + ', B ' + (POINTS - a);
      done += 1;
    } else {
      points[inst] = null;
      out.textContent = 'not judged yet';
    }
  });
  const judge = document.getElementById('judge-name').value.trim();
  const record = {format: %(format)s, page_id: PAGE_ID, judge: judge, complete: done === INSTANCES.length,
                  points: points};
  const text = JSON.stringify(record, null, 1);
  document.getElementById('judge-json').textContent = text;
  const link = document.getElementById('download');
  link.href = 'data:application/json;charset=utf-8,' + encodeURIComponent(text);
  link.download = 'judge-' + PAGE_ID + '-' + (judge.replace(/[^A-Za-z0-9_-]+/g, '_') || 'anonymous') + '.json';
  document.getElementById('progress').textContent = done + ' of ' + INSTANCES.length + ' instances judged';
}
document.addEventListener('change', collect);
document.getElementById('judge-name').addEventListener('input', collect);
// Scripted judging: ?judge=NAME&splits=a1,a2,... types the name and clicks A's share of each instance in
// page order, the same events a judge's clicks fire.
const query = new URLSearchParams(window.location.search);
if (query.has('judge')) {
  const name = document.getElementById('judge-name');
  name.value = query.get('judge');
  name.dispatchEvent(new Event('input'));
}
if (query.has('splits')) {
  query.get('splits').split(',').forEach(function (v, k) {
    const el = document.querySelector('input[name="split-' + k + '"][value="' + v.trim() + '"]');
    if (el) { el.click(); }
  });
}
collect();
"""


def _y_range(metric: str, runs, values: List[float]):

    lo, hi = metric_bounds(metric, runs)
    lo = min(values) if lo is None else min(lo, min(values))
    hi = max(values) if hi is None else max(hi, max(values))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def build_page(runs, metric: str, x: str, instance_key: str, pair: Optional[Sequence[str]], seed: int):
    """(html text, key dict) of the judging page."""
    by_alg, algs, instances = cells(runs, instance_key)
    if pair is None:
        if len(algs) != 2:
            raise GanbenchError(f"--judge: the sweep has {len(algs)} algorithms ({'; '.join(algs)}); name two with "
                                f"--judge-pair ALGORITHM ALGORITHM")
        pair = algs
    for a in pair:
        if a not in by_alg:
            raise GanbenchError(f"--judge-pair: no algorithm {a!r} (have: {'; '.join(algs)})")
    if pair[0] == pair[1]:
        raise GanbenchError("--judge-pair: name two different algorithms")
    curves: Dict[str, Dict[str, list]] = {}
    for inst in instances:
        per = {a: [list(zip(*curve(r, metric, x))) for r in by_alg[a].get(inst, [])] for a in pair}
        if all(any(c for c in per[a]) for a in pair):
            curves[inst] = per
    if not curves:
        raise GanbenchError(f"--judge: no instance where both {pair[0]} and {pair[1]} have an evaluation of {metric}")
    rng = random.Random(seed)
    sides = []
    for inst in curves:
        left_first = rng.random() < 0.5
        a, b = (pair[0], pair[1]) if left_first else (pair[1], pair[0])
        sides.append({"instance": inst, "A": a, "B": b})
    key = {"format": FORMAT, "pair": list(pair), "metric": metric, "x": x, "instance_key": instance_key,
           "seed": seed, "points_per_instance": POINTS, "sides": sides}
    page_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    key["page_id"] = page_id

    body = []
    for k, s in enumerate(sides):
        per = curves[s["instance"]]
        pts = [p for a in pair for c in per[a] for p in c]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        xr = (min(xs), max(xs))
        yr = _y_range(metric, runs, ys)
        panels = "".join(f"<figure>{_svg(per[s[side]], xr, yr, AUC_X[x][0], metric, side)}</figure>"
                         for side in ("A", "B"))
        radios = "".join(f'<label class="choice"><input type="radio" name="split-{k}" value="{_share(v)}"> '
                         f'{_share(v)}</label>' for v in CHOICES)
        body.append(f'<section class="instance" data-index="{k}"><h2>Instance {html.escape(s["instance"])}</h2>'
                    f'<div class="panels">{panels}</div><fieldset><legend>Points for A (B gets the rest of '
                    f'{_share(POINTS)})</legend>{radios}<span class="b-share" id="share-{k}"></span></fieldset>'
                    f'</section>')
    instances_json = json.dumps([s["instance"] for s in sides]).replace("</", "<\\/")
    script = SCRIPT % {"page_id": json.dumps(page_id), "instances": instances_json, "points": json.dumps(POINTS),
                       "format": json.dumps(FORMAT)}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ganbench blind judging {page_id}</title>
<style>{STYLE}</style></head><body>
<h1>Blind side-by-side judging</h1>
<p>Each instance is one pair of random architectures trained by two algorithms; their {html.escape(metric)} curves
are shown as A and B, each side's algorithm chosen at random per instance. Split the instance's
{_share(POINTS)} points between A and B by how stably they train: failure to learn and mode collapse lose
points; if both do well or both do poorly, give 2.5 each. Then save the judgement (link below) and hand the
file to <code>ganbench-report SWEEP --judge-score FILE</code>. Page {page_id}.</p>
<p><label>Judge: <input id="judge-name" type="text" autocomplete="off"></label></p>
{''.join(body)}
<p id="progress"></p>
<p><a id="download" href="#" download="judge.json">Save the judgement (JSON)</a></p>
<pre id="judge-json"></pre>
<script>{script}</script>
</body></html>
"""
    return page, key


def run_judge(args: argparse.Namespace, runs) -> str:
    metric = pick_score(runs, args.score)
    seed = args.judge_seed if args.judge_seed is not None else secrets.randbits(63)
    page, key = build_page(runs, metric, args.auc_x, args.instance_key, args.judge_pair, seed)
    folder = out_dir(args) / "judge"
    folder.mkdir(parents=True, exist_ok=True)
    page_path = folder / f"page-{key['page_id']}.html"
    key_path = folder / f"key-{key['page_id']}.json"
    # Key first: a page is never there without the key that scores it.
    _write_atomic(key_path, json.dumps(key, indent=1) + "\n")
    _write_atomic(page_path, page)
    return (f"wrote the judging page {page_path} ({len(key['sides'])} instances, {metric} against "
            f"{AUC_X[args.auc_x][0]}; the sides' key is {key_path}: keep it from the judges)\n"
            f"score saved judgements with: ganbench-report {' '.join(map(str, args.sweep_dirs))} --judge-score FILE ...")


def _write_atomic(path: Path, text: str) -> None:
    import os  # noqa: PLC0415

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# scoring


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise GanbenchError(f"{what}: not a readable JSON file ({type(err).__name__}: {reason})") from None


def _load(path: Path) -> dict:
    """A saved judgement: {"format": FORMAT, "page_id": the page's hex id, "judge": name, "points":
    {instance: {"A": a, "B": b} or null}}; the splits are checked against the key in qualitative_scores."""
    record = _read_json(path, f"--judge-score {path}")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise GanbenchError(f"--judge-score {path}: not a judgement saved from a ganbench judging page "
                            f"(format {FORMAT!r})")
    page_id = record.get("page_id")
    # The id names the key file to read, so it must be the page's hex hash and never a path.
    if not isinstance(page_id, str) or not re.fullmatch(r"[0-9a-f]{1,64}", page_id):
        got = "has no page_id" if page_id is None else f"page_id is {json.dumps(page_id)[:40]}"
        raise GanbenchError(f"--judge-score {path}: {got}; expected the judging page's id (hex digits, as in "
                            f"page-<id>.html)")
    if not isinstance(record.get("judge"), (str, type(None))):
        raise GanbenchError(f"--judge-score {path}: judge is {json.dumps(record['judge'])[:40]}, expected a name")
    if not isinstance(record.get("points"), (dict, type(None))):
        raise GanbenchError(f"--judge-score {path}: points is {json.dumps(record['points'])[:40]}, expected an object "
                            f"{{instance: {{\"A\": points, \"B\": points}}}}")
    return record


def _load_key(path: Path) -> dict:
    """The sides' key written by --judge: {"pair": [a, b], "sides": [{"instance", "A", "B"}, ...], ...}."""
    key = _read_json(path, f"--judge-score: key {path}")
    pair = key.get("pair") if isinstance(key, dict) else None
    sides = key.get("sides") if isinstance(key, dict) else None
    ok = (isinstance(pair, list) and len(pair) == 2 and all(isinstance(a, str) for a in pair) and isinstance(sides, list)
          and all(isinstance(s, dict) and all(isinstance(s.get(k), str) for k in ("instance", "A", "B"))
                  and {s["A"], s["B"]} == set(pair) for s in sides))
    if not ok:
        raise GanbenchError(f"--judge-score: key {path}: not a key written by --judge (a pair of algorithms and, per "
                            f"instance, which one is A and which B)")
    return key


def qualitative_scores(folder: Path, files: Sequence[Path]) -> dict:
    """{"scores": {algorithm: 1/J Σ_j Σ_i points}, "per_instance": {instance: {algorithm: mean points}},
    "judges": {name: {algorithm: Σ_i points}}, "instances": I, "page_id", "pair"} from saved judgements."""
    records = [(Path(f), _load(f)) for f in files]
    ids = {r["page_id"] for _, r in records}
    if len(ids) != 1:
        raise GanbenchError(f"--judge-score: the files come from different pages ({', '.join(sorted(map(str, ids)))}); "
                            f"score one page's judgements at a time")
    page_id = ids.pop()
    key_path = Path(folder) / "judge" / f"key-{page_id}.json"
    if not key_path.is_file():
        raise GanbenchError(f"--judge-score: no key {key_path} for page {page_id} (the page's sides are unknown; "
                            f"give --out/the sweep the page was written for)")
    key = _load_key(key_path)
    pair, sides = key["pair"], key["sides"]
    judges: Dict[str, Dict[str, float]] = {}
    per_instance: Dict[str, Dict[str, float]] = {s["instance"]: {a: 0.0 for a in pair} for s in sides}
    for path, r in records:
        name = str(r.get("judge") or "").strip() or path.stem
        if name in judges:
            raise GanbenchError(f"--judge-score {path}: a second judgement by {name!r}; one file per judge")
        points = r.get("points") or {}
        totals = {a: 0.0 for a in pair}
        for s in sides:
            p = points.get(s["instance"])
            if not isinstance(p, dict):
                raise GanbenchError(f"--judge-score {path}: instance {s['instance']} is not judged")
            a_pts, b_pts = p.get("A"), p.get("B")
            ok = (isinstance(a_pts, (int, float)) and isinstance(b_pts, (int, float))
                  and not isinstance(a_pts, bool) and not isinstance(b_pts, bool)
                  and any(math.isclose(a_pts, c) for c in CHOICES) and math.isclose(a_pts + b_pts, POINTS))
            if not ok:
                raise GanbenchError(f"--judge-score {path}: instance {s['instance']}: A and B must split "
                                    f"{_share(POINTS)} points in steps of {_share(STEP)}, got A={a_pts!r}, B={b_pts!r}")
            for side, pts in (("A", a_pts), ("B", b_pts)):
                totals[s[side]] += float(pts)
                per_instance[s["instance"]][s[side]] += float(pts)
        judges[name] = totals
    n = len(judges)
    scores = {a: sum(t[a] for t in judges.values()) / n for a in pair}
    per_instance = {i: {a: v / n for a, v in d.items()} for i, d in per_instance.items()}
    return {"scores": scores, "per_instance": per_instance, "judges": judges, "instances": len(sides),
            "page_id": page_id, "pair": pair, "metric": key.get("metric")}


def run_judge_score(args: argparse.Namespace) -> str:

    q = qualitative_scores(out_dir(args), args.judge_score)
    pair, names = q["pair"], sorted(q["judges"])
    total = POINTS * q["instances"]
    rows = [["algorithm", f"qual. score (of {_share(total)})", *(f"judge {n}" for n in names)]]
    rows += [[a, f"{q['scores'][a]:g}", *(f"{q['judges'][n][a]:g}" for n in names)] for a in pair]
    inst_rows = [["instance", *pair]] + [[i, *(f"{d[a]:g}" for a in pair)] for i, d in q["per_instance"].items()]
    text = (f"qualitative score, page {q['page_id']} ({q['metric']} curves), {len(names)} judge(s), "
            f"{q['instances']} instances of {_share(POINTS)} points: mean over judges of the points summed over instances")
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    md = ["# Qualitative score (blind judging)", "", text + ".", "", format_markdown_table(rows), "",
          "Per instance, the judges' mean split:", "", format_markdown_table(inst_rows), ""]
    (out / "judge_score.md").write_text("\n".join(md) + "\n")
    return "\n".join([text, format_text_table(rows), "", format_text_table(inst_rows),
                      f"wrote {out / 'judge_score.md'}"])
