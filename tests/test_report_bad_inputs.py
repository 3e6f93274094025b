"""ganbench-report on malformed run files and bad flags (issue 25): a run with a malformed file is skipped
with one warning line naming the file and what is wrong, and the other runs are reported as if it were not
there (exit 0); a bad flag is one line, exit 2, and nothing is written. No traceback in any case.

Each case builds a small sweep in tmp_path (tests/test_report.py's make_run: the files the runner writes,
without training): two finished dragan seeds with modes 6 and 8 (final mean 7), one wgan_gp seed, and one
vanilla run that gets the malformed file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import bogonet_sweep
from ganbench.report import cli as report_cli, judge, search as report_search, tables as report
from test_report import make_run, metric, toy_metrics

CURVE = [{"step": 0, "images_seen": 0, "wall_time_s": 0.0, "modes": 1.0},
         {"step": 100, "images_seen": 6400, "wall_time_s": 10.0, "modes": 2.0}]
REPORT = Path(sys.executable).parent / "ganbench-report"


def build(root: Path) -> Path:
    """The sweep; returns the vanilla run, the one to break."""
    for seed, final in enumerate([6.0, 8.0]):
        make_run(root, ["objective=dragan", f"seed={seed}"], metrics={"modes": metric(final, final)}, curve=CURVE)
    make_run(root, ["objective=wgan_gp", "seed=0"], metrics={"modes": metric(3.0, 3.0)}, curve=CURVE)
    return make_run(root, ["objective=vanilla", "seed=0"], metrics={"modes": metric(5.0, 5.0)}, curve=CURVE)


def listing(root: Path) -> dict:
    """Every path under ``root`` with its size and mtime: equal before and after means nothing was written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def lines_naming(text: str, name: str):
    return [line for line in text.splitlines() if name in line]


RESULTS, METRICS = "results.json", "metrics.jsonl"
OVERRIDES, HYDRA, CONFIG = ".hydra/overrides.yaml", ".hydra/hydra.yaml", ".hydra/config.yaml"

# (file of the vanilla run, its content, words the warning must hold)
MALFORMED = {
    "results-list": (RESULTS, "[1, 2]", "is a list, expected a JSON object"),
    "results-string": (RESULTS, '"done"', 'is a string ("done"), expected a JSON object'),
    "results-invalid-json": (RESULTS, '{"status": "completed",', "is not valid JSON"),
    "results-empty": (RESULTS, "", "is empty"),
    "results-no-status": (RESULTS, '{"metrics": {}}', "has no status"),
    "results-status-number": (RESULTS, '{"status": 3}', "status is a number (3), expected a string"),
    "results-metrics-list": (RESULTS, '{"status": "completed", "metrics": [1]}',
                             "metrics is a list, expected an object or null"),
    "results-metric-string": (RESULTS, '{"status": "completed", "metrics": {"modes": "many"}}',
                              'metrics.modes is a string ("many"), expected an object'),
    "results-final-string": (RESULTS, '{"status": "completed", "metrics": {"modes": {"final": "7", "best": 7}}}',
                             'metrics.modes.final is a string ("7"), expected a number or null'),
    "results-direction-string": (RESULTS, '{"status": "completed", "metrics": {"modes": {"final": 7, '
                                 '"higher_is_better": "yes"}}}', "metrics.modes.higher_is_better is a string"),
    "results-overrides-numbers": (RESULTS, '{"status": "completed", "overrides": [1]}', "overrides holds a number (1)"),
    "results-config-list": (RESULTS, '{"status": "completed", "config": [1]}', "config is a list"),
    "results-not-utf8": (RESULTS, b"\xff\xfe{}", "is not UTF-8 text"),
    "metrics-row-list": (METRICS, "[1, 2]\n", "line 1: is a list, expected a JSON object"),
    "metrics-row-string": (METRICS, '{"step": 0, "modes": 1}\n"row"\n', 'line 2: is a string ("row")'),
    "metrics-step-string": (METRICS, '{"step": 0, "modes": 1}\n{"step": "100", "modes": 2}\n',
                            'line 2: step is a string ("100"), expected a finite number'),
    "metrics-step-null": (METRICS, '{"step": null, "modes": 1}\n', "line 1: step is null, expected a finite number"),
    "metrics-no-step": (METRICS, '{"modes": 1}\n', "line 1: has no step"),
    "metrics-value-string": (METRICS, '{"step": 0, "modes": "many"}\n',
                             'line 1: metric modes is a string ("many"), expected a number or null'),
    "metrics-value-boolean": (METRICS, '{"step": 0, "modes": true}\n', "metric modes is a boolean (true)"),
    "metrics-time-string": (METRICS, '{"step": 0, "wall_time_s": "10 s", "modes": 1}\n', "wall_time_s is a string"),
    "metrics-invalid-line": (METRICS, '{"step": 0, "modes": 1\n{"step": 100, "modes": 2}\n',
                             "line 1 is not valid JSON"),
    # A last line with its newline was written whole: it is not a torn write, and is malformed.
    "metrics-invalid-last-line": (METRICS, '{"step": 0, "modes": 1}\n{"step": 100, "mo\n', "line 2 is not valid JSON"),
    "overrides-invalid-yaml": (OVERRIDES, "[objective=vanilla, seed=0\n", "is not valid YAML"),
    "overrides-mapping": (OVERRIDES, "objective: vanilla\n", "is a mapping, expected a list of overrides"),
    "overrides-number": (OVERRIDES, "5\n", "is a number, expected a list of overrides"),
    "overrides-empty": (OVERRIDES, "", "is empty, expected a list of overrides"),
    "overrides-not-strings": (OVERRIDES, "[1, 2]\n", "holds 1, expected overrides"),
    "hydra-invalid-yaml": (HYDRA, "hydra: [\n", "is not valid YAML"),
    "hydra-list": (HYDRA, "[1]\n", "is a list, expected a mapping"),
    "hydra-runtime-list": (HYDRA, "hydra: {runtime: [1]}\n", "hydra.runtime is a list, expected a mapping"),
    "hydra-choices-list": (HYDRA, "hydra: {runtime: {choices: [1]}}\n", "hydra.runtime.choices is a list"),
    "hydra-choice-mapping": (HYDRA, "hydra: {runtime: {choices: {objective: {a: 1}}}}\n",
                             "hydra.runtime.choices.objective is a mapping, expected an option name"),
    "config-invalid-yaml": (CONFIG, "objective: {name: [\n", "is not valid YAML"),
    "config-list": (CONFIG, "- 1\n", "is a list, expected a mapping"),
    "config-string": (CONFIG, "hello\n", "is a string, expected a mapping"),
}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    return root, build(root)


def check_good_runs_reported(root: Path, printed: str, skipped: int = 1) -> None:
    """The dragan and wgan_gp groups as without the bad run: modes final mean (6 + 8)/2 = 7 and 3."""
    import csv

    rows = {r["group"]: r for r in csv.DictReader((root / "report.csv").open())}
    assert sorted(rows) == ["objective=dragan", "objective=wgan_gp"]
    assert float(rows["objective=dragan"]["modes_final_mean"]) == 7.0
    assert float(rows["objective=wgan_gp"]["modes_final_mean"]) == 3.0
    assert printed.startswith(f"3 runs in 2 groups (3 completed); {skipped} run(s) skipped")


def test_the_sweep_without_a_malformed_file_reports_every_run(sweep, capsys):
    root, _ = sweep
    assert report_cli.main([str(root), "--no-figures"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("4 runs in 3 groups (4 completed); final values")


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_run_file_is_one_warning_and_the_rest_is_reported(sweep, capsys, name):
    root, bad = sweep
    relative, content, words = MALFORMED[name]
    target = bad / relative
    if relative == CONFIG:   # results.json carries the config when it has one: this run's has none
        body = json.loads((bad / RESULTS).read_text())
        assert "config" not in body
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    assert report_cli.main([str(root), "--no-figures"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    warned = lines_naming(out + err, str(bad))
    assert warned == [f"ganbench-report: warning: {target}: {warned[0].split(': ', 3)[3]}"]   # one line, the file
    assert words in warned[0] and warned[0].endswith("; run skipped")
    assert err.strip() == warned[0]
    check_good_runs_reported(root, out)


def test_a_torn_last_line_is_a_write_cut_short_not_a_malformed_file(sweep, capsys):
    """A row is appended in one write ending with its newline: a last line without one that does not parse was
    cut short by a kill (or is being written), and is left out without a warning."""
    root, bad = sweep
    (bad / METRICS).write_text('{"step": 0, "wall_time_s": 0.0, "modes": 1.0}\n{"step": 100, "wall_time_s": 1')
    assert report_cli.main([str(root), "--no-figures", "--at-step", "100"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = {r[0]: r for r in (line.split() for line in out.splitlines()) if r}
    assert rows["objective=vanilla"][1:5] == ["1", "1", "0", "0"]   # counted, and its one row (modes 1) is read
    assert report.find_runs([bad])[0].curve == [{"step": 0, "wall_time_s": 0.0, "modes": 1.0}]


@pytest.mark.parametrize("body", [{"status": "completed", "metrics": None, "config": None, "overrides": None},
                                  {"status": "completed"}, {"status": "interrupted-by-a-newer-ganbench"}])
def test_records_of_the_allowed_shapes_are_read_not_skipped(sweep, capsys, body):
    """null or absent optional keys are no metrics, no config; an unknown status string counts as failed."""
    root, bad = sweep
    (bad / RESULTS).write_text(json.dumps(body))
    assert report_cli.main([str(root), "--no-figures"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    status = "failed" if body["status"] != "completed" else "completed"
    assert out.startswith(f"4 runs in 3 groups (3 completed, 1 {status}); final values" if status == "failed" else
                          "4 runs in 3 groups (4 completed); final values")


def test_find_runs_raises_on_a_malformed_run_unless_asked_to_skip(sweep):
    root, bad = sweep
    (bad / RESULTS).write_text("[]")
    with pytest.raises(report.MalformedRun, match="results.json: is a list"):
        report.find_runs([root])
    skipped = []
    assert len(report.find_runs([root], skipped)) == 3
    assert [s.file for s in skipped] == [bad / RESULTS]


def test_only_malformed_runs_is_a_one_line_error(tmp_path, capsys):
    bad = make_run(tmp_path / "s", ["objective=vanilla", "seed=0"])
    (bad / RESULTS).write_text("[]")
    before = listing(tmp_path)
    assert report_cli.main([str(tmp_path / "s")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        f"ganbench-report: warning: {bad / RESULTS}: is a list, expected a JSON object; run skipped",
        f"ganbench-report: error: no readable run under {tmp_path / 's'}: all 1 have a malformed file (warnings above)"]
    assert listing(tmp_path) == before


# ------------------------------------------------------------------------------------------------ bad flags


def judgement(page_id="abcd", **change):
    record = {"format": judge.FORMAT, "page_id": page_id, "judge": "x", "points": {"0": {"A": 2.5, "B": 2.5}}}
    record.update(change)
    return record


BAD_FLAGS = {
    "unknown-flag": (["--bogus"], "unrecognized arguments: --bogus"),
    "no-sweep": (None, "the following arguments are required: sweep_dirs"),
    "missing-sweep": (["MISSING"], "not a directory:"),
    "at-step-word": (["--at-step", "x"], "argument --at-step: must be a generator step, a number >= 0 (got 'x')"),
    "at-step-negative": (["--at-step=-5"], "(got '-5')"),
    "at-step-nan": (["--at-step", "nan"], "(got 'nan')"),
    "table-choice": (["--table", "nope"], "argument --table: invalid choice: 'nope'"),
    "judge-seed-word": (["--judge", "--judge-seed", "x"], "argument --judge-seed: invalid int value: 'x'"),
    "out-missing-parent": (["--out", "TMP/missing/report"], "--out TMP/missing/report: its parent TMP/missing does "
                           "not exist (create it first)"),
    "out-is-a-file": (["--out", "TMP/a-file"], "--out TMP/a-file: exists and is not a directory"),
    "out-under-a-file": (["--out", "TMP/a-file/report"], "its parent TMP/a-file is not a directory"),
    "tie-rtol-range": (["--table", "bogonet", "--tie-rtol", "2"], "--tie-rtol: must be in [0, 1), got 2"),
    "judge-score-missing-file": (["--judge-score", "TMP/none.json"], "TMP/none.json: not a readable JSON file "
                                 "(FileNotFoundError: No such file or directory)"),
    "judge-score-not-json": (["--judge-score", "TMP/a-file"], "TMP/a-file: not a readable JSON file (JSONDecodeError"),
    "judge-score-no-page-id": (["--judge-score", "TMP/no-page-id.json"], "TMP/no-page-id.json: has no page_id; "
                               "expected the judging page's id"),
    "judge-score-page-id-path": (["--judge-score", "TMP/page-id-path.json"], 'page_id is "../../a-file"'),
    "judge-score-judge-list": (["--judge-score", "TMP/judge-list.json"], "judge is [1], expected a name"),
    "judge-score-points-list": (["--judge-score", "TMP/points-list.json"], "points is [1], expected an object"),
    "judge-score-boolean-points": (["--judge-score", "TMP/boolean-points.json"], "instance 0: A and B must split 5 "
                                   "points in steps of 0.5, got A=True, B=4"),
    "judge-score-bad-key": (["--judge-score", "TMP/bad-key.json"], "sweep/judge/key-bad0.json: not a key written by "
                            "--judge"),
}


@pytest.fixture
def flag_sweep(tmp_path):
    """A sweep, a plain file, judgement files (one per malformed kind) and a key that is not a key."""
    root = tmp_path / "sweep"
    build(root)
    (tmp_path / "a-file").write_text("not json")
    files = {"no-page-id": judgement(page_id=None), "page-id-path": judgement(page_id="../../a-file"),
             "judge-list": judgement(judge=[1]), "points-list": judgement(points=[1]),
             "boolean-points": judgement(page_id="b001", points={"0": {"A": True, "B": 4}}),
             "bad-key": judgement(page_id="bad0")}
    for name, record in files.items():
        if record.get("page_id") is None:
            del record["page_id"]
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    (root / "judge").mkdir()
    (root / "judge" / "key-bad0.json").write_text(json.dumps({"pair": ["a"], "sides": "x"}))
    (root / "judge" / "key-b001.json").write_text(json.dumps({"pair": ["objective=dragan", "objective=vanilla"], "sides": [
        {"instance": "0", "A": "objective=dragan", "B": "objective=vanilla"}]}))
    return root


@pytest.mark.parametrize("name", BAD_FLAGS)
def test_a_bad_flag_is_one_line_exit_2_and_writes_nothing(flag_sweep, tmp_path, capsys, name):
    argv, words = BAD_FLAGS[name]
    tmp = str(tmp_path)
    if argv is None:
        argv = []
    elif argv == ["MISSING"]:
        argv = [str(tmp_path / "missing")]
    else:
        argv = [str(flag_sweep), *(a.replace("TMP", tmp) for a in argv)]
    before = listing(tmp_path)
    assert report_cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("ganbench-report: error: ")
    assert words.replace("TMP", tmp) in err
    assert listing(tmp_path) == before


def test_help_keeps_the_full_usage(capsys):
    assert report_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ganbench-report") and "--judge-score" in out and len(out.splitlines()) > 20


def test_an_unexpected_error_is_one_line_and_its_traceback_on_request(sweep, capsys, monkeypatch):
    """The net under everything else: an exception nobody foresaw is one line, exit 1, unless HYDRA_FULL_ERROR=1."""
    root, _ = sweep

    def boom(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(report_cli, "run_report", boom)
    assert report_cli.main([str(root)]) == 1
    assert capsys.readouterr().err == ("ganbench-report: error: RuntimeError: boom (HYDRA_FULL_ERROR=1 shows the "
                                       "traceback)\n")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(RuntimeError, match="boom"):
        report_cli.main([str(root)])


@pytest.mark.parametrize("case", ["results-list", "unknown-flag", "out-missing-parent"])
def test_the_console_script_prints_no_traceback(sweep, tmp_path, case):
    root, bad = sweep
    if case == "results-list":
        argv, code = [str(root), "--no-figures"], 0
        (bad / RESULTS).write_text("[1, 2]")
    else:
        argv, code = [str(root), *(a.replace("TMP", str(tmp_path)) for a in BAD_FLAGS[case][0])], 2
    done = subprocess.run([str(REPORT), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == code
    assert "Traceback" not in done.stdout + done.stderr and len(done.stderr.splitlines()) == 1
    assert str(bad if case == "results-list" else "ganbench-report: error:") in done.stderr


# ----------------------------------------------------------------------------- every entry point, one bad run


def break_run(root: Path, overrides) -> Path:
    bad = make_run(root, overrides, metrics={"modes": metric(1.0, 1.0)}, curve=CURVE)
    (bad / METRICS).write_text('{"step": "late", "modes": 1}\n')
    return bad


def one_warning(out: str, err: str, bad: Path) -> None:
    assert "Traceback" not in out + err
    assert lines_naming(out + err, str(bad)) == [f"ganbench-report: warning: {bad / METRICS}: line 1: step is a "
                                                 f'string ("late"), expected a finite number; run skipped']


def test_toy_table_skips_a_malformed_run(tmp_path, capsys):
    root = tmp_path / "toy"
    for seed, modes in enumerate([8.0, 6.0]):
        make_run(root, ["dataset=ring8", "objective=dragan", f"seed={seed}"], metrics=toy_metrics(modes, 80.0, 0.1))
    make_run(root, ["dataset=ring8", "objective=wgan_gp", "seed=0"], metrics=toy_metrics(3.0, 50.0, 0.5))
    bad = break_run(root, ["dataset=ring8", "objective=vanilla", "seed=0"])
    assert report_cli.main([str(root), "--table", "toy"]) == 0
    out, err = capsys.readouterr()
    one_warning(out, err, bad)
    rows = [line.split()[:5] for line in out.splitlines() if line.startswith("objective=")]
    # dragan: (8 + 6)/2 = 7, SE = s/√2 = √2/√2 = 1; wgan_gp: one run; vanilla: skipped, no row
    assert rows == [["objective=dragan", "2", "7.0", "±", "1.0"], ["objective=wgan_gp", "1", "3.0", "†", "50.0"]]


@pytest.fixture
def bogonet_with_a_bad_run(tmp_path):
    root = bogonet_sweep.build(tmp_path / "sweep")
    bad = break_run(root, ["experiment=bogonet", "objective=lsgan", "arch.seed=0", "seed=0"])
    return root, bad


def test_bogonet_table_skips_a_malformed_run(bogonet_with_a_bad_run, capsys):
    root, bad = bogonet_with_a_bad_run
    assert report_cli.main([str(root), "--table", "bogonet"]) == 0
    out, err = capsys.readouterr()
    one_warning(out, err, bad)
    assert out.startswith("16 runs, 6 instances, 3 algorithms;")   # 6 + 6 + 4 and "lsgan" not in out


def test_judge_and_judge_score_skip_a_malformed_run(bogonet_with_a_bad_run, tmp_path, capsys):
    root, bad = bogonet_with_a_bad_run
    pair = ["objective=dragan", "objective=vanilla"]
    assert report_cli.main([str(root), "--judge", "--judge-pair", *pair, "--judge-seed", "3"]) == 0
    out, err = capsys.readouterr()
    one_warning(out, err, bad)
    key = json.loads(next((root / "judge").glob("key-*.json")).read_text())
    assert len(key["sides"]) == 6
    f = tmp_path / "j.json"
    f.write_text(json.dumps(judgement(page_id=key["page_id"], points={s["instance"]: {"A": 5, "B": 0}
                                                                      for s in key["sides"]})))
    assert report_cli.main([str(root), "--judge-score", str(f)]) == 0
    out, err = capsys.readouterr()
    one_warning(out, err, bad)
    # A gets all 5 points on each of the 6 instances: the two algorithms' scores add up to 30.
    scores = json.loads(json.dumps({line.split()[0]: float(line.split()[1]) for line in out.splitlines()
                                    if line.startswith("objective=")}))
    assert sorted(scores) == pair and sum(scores.values()) == 30.0


def test_gradient_norm_figure_skips_unreadable_event_files(sweep, capsys):
    """The default report with figures: a malformed run is skipped, and a run whose TensorBoard event file
    cannot be read (a folder in its place) gets no gradient-norm panel, with one warning line naming it."""
    root, bad = sweep
    (bad / METRICS).write_text('{"step": "late", "modes": 1}\n')
    good = root / "objective=wgan_gp" / "seed=0"
    events = good / "events.out.tfevents.1.host"
    events.mkdir()
    assert report_cli.main([str(root)]) == 0
    out, err = capsys.readouterr()
    one_warning(out, err, bad)
    assert lines_naming(out + err, str(events)) == [f"ganbench-report: warning: {events}: cannot be read (Is a "
                                                    "directory); no gradient-norm panel for this run"]
    check_good_runs_reported(root, out)
    assert (root / "figures" / "modes_vs_step.png").exists()


def test_a_search_dir_reports_its_storage_whatever_its_run_folders_hold(tmp_path, capsys):
    """A search's report reads optuna.db, not the run folders: a malformed one changes nothing. A study whose
    ganbench attributes have the wrong shape is reported with what it has."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path / "search"
    break_run(root, ["objective.lr=0.1", "seed=0"])
    study = optuna.create_study(storage=f"sqlite:///{root / 'optuna.db'}", study_name="s")
    study.set_user_attr("ganbench_search", "not a mapping")

    def objective(trial):
        trial.set_user_attr("seed_values", 5)   # not a list
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=2)
    assert report_cli.main([str(root), "--no-figures"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "study s: 2 trials (2 complete, 0 failed, 0 running)" in out
    assert report_search.StudyReport(study).metric == "value"
    (root / "optuna.db").write_bytes(b"not a database")
    before = listing(tmp_path)
    assert report_cli.main([str(root)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"ganbench-report: error: {root / 'optuna.db'}: not an Optuna database (file is not a "
                                "database); it was left untouched; use another hydra.sweep.dir or hydra.sweeper.storage"]
    assert listing(tmp_path) == before
