"""ganbench-report --judge / --judge-score: the blind judging page of the DRAGAN paper's §3.2, judged in
headless Chromium by a scripted judge, and the qualitative score computed from its saved judgements.

Chromium is Debian's ``chromium`` package (.ci/run installs it). Outside CI the browser test skips, with the
reason, when it is absent; with CI=true it fails instead."""

import html
import json
import os
import re
import shutil
import subprocess

import pytest

import bogonet_sweep
from ganbench.report import cli as report_cli, judge

DRAGAN, VANILLA, WGAN = "objective=dragan", "objective=vanilla", "objective=wgan_gp"
# The scripted judges' points for dragan per instance 0..5 (vanilla gets 5 minus these).
JUDGE_1 = [5, 3.5, 2.5, 0, 4, 1]
JUDGE_2 = [4, 3, 2.5, 1.5, 5, 2]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but chromium is not installed (.ci/run installs Debian's chromium package)")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium); the judging page test needs a "
                "headless browser")


@pytest.fixture
def page(tmp_path):
    sweep = bogonet_sweep.build(tmp_path / "sweep")
    assert report_cli.main([str(sweep), "--judge", "--judge-pair", DRAGAN, VANILLA, "--judge-seed", "3"]) == 0
    pages = list((sweep / "judge").glob("page-*.html"))
    assert len(pages) == 1
    page_id = pages[0].stem[len("page-"):]
    key = json.loads((sweep / "judge" / f"key-{page_id}.json").read_text())
    return sweep, pages[0], key


def a_shares(key, dragan_points):
    """A's points per instance in page order, so that dragan gets ``dragan_points`` on whichever side."""
    out = []
    for side in key["sides"]:
        d = dragan_points[int(side["instance"])]
        out.append(d if side["A"] == DRAGAN else 5 - d)
    return out


def judge_in_chromium(tmp_path, page_path, name, shares) -> dict:
    """Open the page in headless Chromium with the scripted judge's query string; the JSON it shows."""
    splits = ",".join(f"{s:g}" for s in shares)
    url = page_path.resolve().as_uri() + f"?judge={name}&splits={splits}"
    proc = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / ('profile-' + name)}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="judge-json">(.*?)</pre>', proc.stdout, re.S)
    assert m, proc.stdout[-2000:]
    return json.loads(html.unescape(m.group(1)))


def test_the_page_is_blind_and_self_contained(page):
    sweep, path, key = page
    text = path.read_text()
    for word in ("dragan", "vanilla", "objective", "wgan"):
        assert word not in text.lower()
    # No network: no external resource of any kind.
    assert "http" not in text and "src=" not in text and "@import" not in text
    assert [s["instance"] for s in key["sides"]] == ["0", "1", "2", "3", "4", "5"]
    assert {frozenset((s["A"], s["B"])) for s in key["sides"]} == {frozenset((DRAGAN, VANILLA))}
    # The sides are drawn at random: both orders occur (seed 3 gives a mix; a fixed order would be a bug).
    assert len({s["A"] for s in key["sides"]}) == 2
    assert text.count('<svg class="curve"') == 12 and text.count('type="radio"') == 6 * 11
    assert key["page_id"] in path.name and key["seed"] == 3


def test_same_seed_same_page_other_seed_other_key(page):
    sweep, path, key = page
    assert report_cli.main([str(sweep), "--judge", "--judge-pair", DRAGAN, VANILLA, "--judge-seed", "3"]) == 0
    assert len(list((sweep / "judge").glob("page-*.html"))) == 1
    assert report_cli.main([str(sweep), "--judge", "--judge-pair", DRAGAN, VANILLA, "--judge-seed", "4"]) == 0
    assert len(list((sweep / "judge").glob("key-*.json"))) == 2


def test_scripted_judges_in_chromium_give_the_qualitative_score(page, tmp_path, capsys):
    sweep, path, key = page
    files = []
    for name, points in (("one", JUDGE_1), ("two", JUDGE_2)):
        record = judge_in_chromium(tmp_path, path, name, a_shares(key, points))
        assert record["judge"] == name and record["complete"] is True and record["page_id"] == key["page_id"]
        f = tmp_path / f"judge-{name}.json"
        f.write_text(json.dumps(record))
        files.append(f)
    # By hand: dragan 5+3.5+2.5+0+4+1 = 16 and 4+3+2.5+1.5+5+2 = 18 -> mean 17; vanilla 30 - 17 = 13.
    q = judge.qualitative_scores(sweep, files)
    assert q["scores"] == {DRAGAN: 17.0, VANILLA: 13.0}
    assert q["judges"] == {"one": {DRAGAN: 16.0, VANILLA: 14.0}, "two": {DRAGAN: 18.0, VANILLA: 12.0}}
    # Per instance the judges' mean split, e.g. instance 0: (5 + 4)/2 = 4.5 for dragan, 0.5 for vanilla.
    assert q["per_instance"]["0"] == {DRAGAN: 4.5, VANILLA: 0.5}
    assert q["per_instance"]["3"] == {DRAGAN: 0.75, VANILLA: 4.25}
    capsys.readouterr()
    assert report_cli.main([str(sweep), "--judge-score", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert "2 judge(s), 6 instances of 5 points" in out
    assert (sweep / "judge_score.md").is_file()
    # Table 1's last column.
    assert report_cli.main([str(sweep), "--table", "bogonet", "--judge-score", *map(str, files)]) == 0
    md = (sweep / "bogonet_table.md").read_text()
    assert f"| {DRAGAN} | 6 | 3.500 |" in md and md.split(f"| {DRAGAN} |")[1].split("\n")[0].endswith("| 17.00 |")
    assert md.split(f"| {WGAN} |")[1].split("\n")[0].endswith("| – |")


def unjudged(key, **change):
    record = {"format": judge.FORMAT, "page_id": key["page_id"], "judge": "x",
              "points": {s["instance"]: {"A": 2.5, "B": 2.5} for s in key["sides"]}}
    record.update(change)
    return record


@pytest.mark.parametrize("mutate,words", [
    (lambda r: r["points"].update({"2": {"A": 6, "B": -1}}), ["instance 2", "steps of 0.5", "A=6"]),
    (lambda r: r["points"].update({"2": {"A": 2.2, "B": 2.8}}), ["instance 2", "A=2.2"]),
    (lambda r: r["points"].update({"4": None}), ["instance 4 is not judged"]),
    (lambda r: r.update({"page_id": "0000"}), ["no key", "page 0000"]),
    (lambda r: r.update({"format": "other"}), ["not a judgement saved from a ganbench judging page"]),
])
def test_bad_judgements_are_one_line_errors(page, tmp_path, capsys, mutate, words):
    sweep, path, key = page
    record = unjudged(key)
    mutate(record)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(record))
    before = sorted(p.name for p in sweep.iterdir())
    assert report_cli.main([str(sweep), "--judge-score", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    for w in words:
        assert w in err
    assert sorted(p.name for p in sweep.iterdir()) == before   # nothing written


def test_two_files_by_one_judge_or_from_two_pages_are_refused(page, tmp_path, capsys):
    sweep, path, key = page
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(unjudged(key)))
    b.write_text(json.dumps(unjudged(key)))
    assert report_cli.main([str(sweep), "--judge-score", str(a), str(b)]) == 2
    assert "a second judgement by 'x'" in capsys.readouterr().err
    b.write_text(json.dumps(unjudged(key, page_id="ffff", judge="y")))
    assert report_cli.main([str(sweep), "--judge-score", str(a), str(b)]) == 2
    assert "different pages" in capsys.readouterr().err


def test_judge_needs_a_pair_when_there_are_more_algorithms(tmp_path, capsys):
    sweep = bogonet_sweep.build(tmp_path / "sweep")
    assert report_cli.main([str(sweep), "--judge"]) == 2
    err = capsys.readouterr().err
    assert "3 algorithms" in err and "--judge-pair" in err
    assert report_cli.main([str(sweep), "--judge", "--judge-pair", DRAGAN, "objective=nope"]) == 2
    assert "no algorithm 'objective=nope'" in capsys.readouterr().err
    assert not (sweep / "judge").exists()
    # Two algorithms: no pair needed; wgan_gp ran on 4 instances, so the page has 4.
    assert report_cli.main([str(sweep), "--judge", "--judge-pair", VANILLA, WGAN, "--judge-seed", "1"]) == 0
    key = json.loads(next((sweep / "judge").glob("key-*.json")).read_text())
    assert [s["instance"] for s in key["sides"]] == ["0", "1", "2", "3"]
