"""ganbench-report against synthetic run directories whose numbers are computed here by hand."""

import csv
import json
import math

import pytest
import yaml

from ganbench.report import cli as report_cli, figures, tables as report


def make_run(root, overrides, status="completed", metrics=None, curve=None, results=True):
    """A run dir as the runner writes it: .hydra/overrides.yaml, results.json, metrics.jsonl."""
    name = ",".join(o for o in overrides if not o.startswith("seed="))
    seed = next(o for o in overrides if o.startswith("seed=")).split("=")[1]
    run = root / name / f"seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    if curve is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    if results:
        body = {"status": status, "step": 100, "iterations": 100, "wall_time_s": 1.0, "metrics": metrics or {}}
        (run / "results.json").write_text(json.dumps(body))
    return run


def metric(final, best, higher=True):
    return {"final": final, "final_step": 100, "best": best, "best_step": 50, "higher_is_better": higher, "reason": None}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    # group A: 3 completed seeds
    for seed, (final, best) in enumerate([(6.0, 7.0), (8.0, 8.5), (7.0, 9.0)]):
        curve = [
            {"step": 0, "images_seen": 0, "wall_time_s": 0.0, "modes": 1.0, "reverse_kl": 2.0},
            {"step": 50, "images_seen": 3200, "wall_time_s": 5.0, "modes": 4.0 + seed, "reverse_kl": 1.0},
            {"step": 100, "images_seen": 6400, "wall_time_s": 10.0, "modes": final, "reverse_kl": 0.5},
        ]
        make_run(
            root,
            ["experiment=toy", "objective=dragan", f"seed={seed}"],
            metrics={"modes": metric(final, best), "reverse_kl": metric(0.5, 0.5, higher=False)},
            curve=curve,
        )
    # group B: 1 completed, 1 diverged, 1 still running (no results.json)
    make_run(root, ["experiment=toy", "objective=vanilla", "seed=0"], metrics={"modes": metric(2.0, 3.0)},
             curve=[{"step": 0, "wall_time_s": 0.0, "modes": 1.0}, {"step": 100, "wall_time_s": 9.0, "modes": 2.0}])
    make_run(root, ["experiment=toy", "objective=vanilla", "seed=1"], status="diverged",
             metrics={"modes": metric(1.0, 4.0)},
             curve=[{"step": 0, "wall_time_s": 0.0, "modes": 4.0}, {"step": 40, "wall_time_s": 4.0, "modes": float("nan")}])
    make_run(root, ["experiment=toy", "objective=vanilla", "seed=2"], results=False,
             curve=[{"step": 0, "wall_time_s": 0.0, "modes": 8.0}])
    return root


def test_numbers_equal_hand_computation(sweep, capsys):
    assert report_cli.main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "objective=dragan" in printed and "objective=vanilla" in printed
    assert "experiment=toy" not in printed.split("\n", 2)[1]  # shared override is not part of the label

    rows = {r["group"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    a, b = rows["objective=dragan"], rows["objective=vanilla"]

    # group A, modes final: 6, 8, 7 -> mean 7, sample std 1, CI = 7 ± t(.975, 2)·1/√3, t = 4.302652729911275
    assert float(a["modes_final_mean"]) == pytest.approx(7.0)
    assert float(a["modes_final_std"]) == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)
    assert float(a["modes_final_ci95_low"]) == pytest.approx(7.0 - half)
    assert float(a["modes_final_ci95_high"]) == pytest.approx(7.0 + half)
    # best: 7, 8.5, 9 -> mean 8.1666..., std sqrt(((-7/6)^2 + (1/3)^2 + (5/6)^2)/2)
    assert float(a["modes_best_mean"]) == pytest.approx(49 / 6)
    assert float(a["modes_best_std"]) == pytest.approx(math.sqrt(((7 / 6) ** 2 + (1 / 3) ** 2 + (5 / 6) ** 2) / 2))
    # AUC over steps 0,50,100 of (1, 4+s, final) / 100 = (50·(1+4+s)/2 + 50·(4+s+final)/2) / 100
    aucs = [(25 * (5 + s) + 25 * (4 + s + f)) / 100 for s, f in enumerate([6.0, 8.0, 7.0])]
    assert float(a["modes_auc_mean"]) == pytest.approx(sum(aucs) / 3)
    assert int(a["n"]) == 3 and int(a["n_completed"]) == 3
    # reverse KL curve 2, 1, 0.5 -> (50·1.5 + 50·0.75)/100 = 1.125 for every seed
    assert float(a["reverse_kl_auc_mean"]) == pytest.approx(1.125)
    assert float(a["reverse_kl_auc_std"]) == pytest.approx(0.0)

    # group B: completed (2.0) and diverged (1.0) enter the stats, the running run only the counts
    assert int(b["n"]) == 3
    assert int(b["n_completed"]) == 1 and int(b["n_diverged"]) == 1 and int(b["n_running"]) == 1
    assert int(b["modes_final_n"]) == 2
    assert float(b["modes_final_mean"]) == pytest.approx(1.5)
    assert float(b["modes_final_std"]) == pytest.approx(math.sqrt(0.5))
    # diverged run's NaN evaluation is skipped: its curve is the single point 4.0 -> AUC 4.0
    assert float(b["modes_auc_mean"]) == pytest.approx(((2.0 + 1.0) / 2 + 4.0) / 2)
    assert b["reverse_kl_final_n"] == "0" and b["reverse_kl_final_mean"] == ""

    md = (sweep / "report.md").read_text()
    assert "| objective=vanilla | 3 | 1 | 1 | 1 running |" in md
    for name in ("modes_vs_step.png", "modes_vs_time.png", "reverse_kl_vs_step.png"):
        assert (sweep / "figures" / name).stat().st_size > 1000


def test_sort_and_by(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert report_cli.main([str(sweep), "--sort", "modes", "--by", "objective", "--out", str(out), "--no-figures"]) == 0
    table = capsys.readouterr().out.splitlines()
    first = next(i for i, line in enumerate(table) if "objective=dragan" in line)
    second = next(i for i, line in enumerate(table) if "objective=vanilla" in line)
    assert first < second  # modes: higher is better, dragan 7 > vanilla 1.5
    assert (out / "report.csv").exists() and not (out / "figures").exists()

    # lower-is-better metric sorts ascending: dragan (0.5) first, vanilla (no value) last
    assert report_cli.main([str(sweep), "--sort", "reverse_kl", "--out", str(out), "--no-figures"]) == 0
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["group"] for r in rows] == ["objective=dragan", "objective=vanilla"]


def test_preempted_and_failed_are_counted_not_averaged(tmp_path):
    root = tmp_path / "s"
    make_run(root, ["objective=wgan", "seed=0"], metrics={"fid": metric(50.0, 40.0, higher=False)})
    make_run(root, ["objective=wgan", "seed=1"], status="preempted", metrics={"fid": metric(90.0, 90.0, higher=False)})
    make_run(root, ["objective=wgan", "seed=2"], status="failed")
    runs = report.find_runs([root])
    groups = report.group_runs(runs)
    report.summarize_groups(groups, ["fid"])
    (g,) = groups
    assert g.status_counts() == {"completed": 1, "preempted": 1, "failed": 1}
    assert g.stats[("fid", "final")].n == 1 and g.stats[("fid", "final")].mean == 50.0
    assert math.isnan(g.stats[("fid", "final")].std)


def test_summarize_and_auc_formulas():
    st = report.summarize([1.0, 2.0, 3.0, 4.0])
    assert st.mean == 2.5 and st.std == pytest.approx(math.sqrt(5 / 3))
    assert st.ci_half == pytest.approx(3.182446305284263 * math.sqrt(5 / 3) / 2)
    assert report.normalized_auc([0, 10, 30], [0.0, 1.0, 1.0]) == pytest.approx((5 + 20) / 30)
    assert report.normalized_auc([5], [3.0]) == 3.0
    assert report.normalized_auc([], []) is None


def test_no_runs_is_a_one_line_error(tmp_path, capsys):
    assert report_cli.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganbench-report: error: no run directories") and err.count("\n") == 1


def test_at_step_reads_the_curve_up_to_that_step(sweep, tmp_path):
    """The DRAGAN^g budget: values as of step 50, and a still-running run past step 50 counts."""
    out = tmp_path / "g"
    make_run(sweep, ["experiment=toy", "objective=vanilla", "seed=3"], results=False,
             curve=[{"step": 0, "wall_time_s": 0.0, "modes": 2.0}, {"step": 60, "wall_time_s": 6.0, "modes": 6.0}])
    assert report_cli.main([str(sweep), "--at-step", "50", "--out", str(out), "--no-figures"]) == 0
    rows = {r["group"]: r for r in csv.DictReader((out / "report.csv").open())}
    a, b = rows["objective=dragan"], rows["objective=vanilla"]
    # dragan seeds at step 50: 4, 5, 6; best up to 50 = same (curves increase); AUC over 0..50
    assert float(a["modes_final_mean"]) == pytest.approx(5.0)
    assert float(a["modes_best_mean"]) == pytest.approx(5.0)
    assert float(a["modes_auc_mean"]) == pytest.approx(sum((1 + 4 + s) / 2 for s in range(3)) / 3)
    # vanilla: completed seed 0 (value at step 0: 1.0), diverged seed 1 (4.0), running seed 3 (2.0:
    # evaluated at 60 >= 50, so it counts); seed 2 (running, only step 0) does not count
    assert int(b["modes_final_n"]) == 3
    assert float(b["modes_final_mean"]) == pytest.approx((1.0 + 4.0 + 2.0) / 3)
    assert "as of generator step 50" in (out / "report.md").read_text()


# --------------------------------------------------------------------------------- honest statistics
def csv_rows(out):
    return {r["group"]: r for r in csv.DictReader((out / "report.csv").open())}


def png_description(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.text.get("Description", "")


def test_confidence_intervals_are_clipped_to_the_metric_range(tmp_path):
    """n = 2: t(0.975, 1) = 12.706; hq_pct 0 and 19.7 give the raw interval 9.85 ± 125.16 = [-115.3, 135.0] %."""
    root = tmp_path / "s"
    values = {"hq_pct": (0.0, 19.7), "modes": (1.0, 8.0), "fid": (5.0, 50.0), "kid_mean": (-0.001, 0.004),
              "ema_fid": (5.0, 50.0)}
    for seed in (0, 1):
        make_run(root, ["dataset=ring8", "objective=a", f"seed={seed}"],
                 metrics={m: metric(v[seed], v[seed], higher=m in ("hq_pct", "modes")) for m, v in values.items()})
    assert report_cli.main([str(root), "--no-figures"]) == 0
    a = csv_rows(root)["all"]  # one group: the shared overrides are not part of the label
    t = 12.706204736174707

    def raw(m):
        x, y = values[m]
        half = t * abs(x - y) / math.sqrt(2) / math.sqrt(2)  # std = |x - y|/√2, / √n
        return (x + y) / 2 - half, (x + y) / 2 + half

    assert raw("hq_pct")[0] == pytest.approx(-115.31, abs=0.01) and raw("hq_pct")[1] == pytest.approx(135.01, abs=0.01)
    assert (float(a["hq_pct_final_ci95_low"]), float(a["hq_pct_final_ci95_high"])) == (0.0, 100.0)
    assert (float(a["modes_final_ci95_low"]), float(a["modes_final_ci95_high"])) == (0.0, 8.0)  # ring8: 8 modes
    assert float(a["fid_final_ci95_low"]) == 0.0
    assert float(a["fid_final_ci95_high"]) == pytest.approx(raw("fid")[1])
    assert float(a["ema_fid_final_ci95_low"]) == 0.0  # the averaged generator's FID too
    # KID's unbiased estimate can be negative: its interval is not cut at 0.
    assert float(a["kid_mean_final_ci95_low"]) == pytest.approx(raw("kid_mean")[0])
    assert "[0, 100]" in (root / "report.md").read_text()
    # The bounds themselves.
    runs = report.find_runs([root])
    assert report.metric_bounds("modes", runs) == (0.0, 8.0)
    assert report.metric_bounds("avg_hq_pct") == (0.0, 100.0) and report.metric_bounds("recall") == (0.0, 1.0)
    assert report.metric_bounds("modes") == (0.0, None) and report.metric_bounds("energy") == (None, None)


def test_n1_cells_are_marked_with_a_footnote(sweep, tmp_path, capsys):
    make_run(sweep, ["experiment=toy", "objective=wgan", "seed=0"], metrics={"modes": metric(5.0, 6.0)})
    out = tmp_path / "o"
    assert report_cli.main([str(sweep), "--out", str(out), "--no-figures"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("objective=wgan"))
    dragan = next(line for line in lines if line.startswith("objective=dragan"))
    assert "5 †" in row and "†" not in dragan  # n = 3: mean ± std, no mark
    assert report.N1_NOTE in lines
    md = (out / "report.md").read_text()
    assert "| objective=wgan | 1 | 5 † | – |" in md and report.N1_NOTE in md


def test_figure_band_is_labelled_as_the_std_band_it_is(tmp_path):
    root = tmp_path / "s"
    for seed, values in enumerate([(80.0, 90.0), (100.0, 100.0)]):
        make_run(root, ["dataset=ring8", "objective=a", f"seed={seed}"], metrics={"hq_pct": metric(values[1], 100.0)},
                 curve=[{"step": s, "wall_time_s": s / 10, "hq_pct": v} for s, v in zip((0, 100), values)])
    runs = report.find_runs([root])
    steps, _, means, lows, highs = figures.band(runs, "hq_pct")
    # step 0: 80, 100 -> mean 90, sample std √200 = 14.14 -> band [75.86, 100 (clipped from 104.14)]
    assert steps == [0.0, 100.0] and means == [90.0, 95.0]
    assert lows[0] == pytest.approx(90 - math.sqrt(200)) and highs[0] == 100.0
    assert lows[1] == pytest.approx(95 - math.sqrt(50)) and highs[1] == 100.0
    assert report_cli.main([str(root)]) == 0
    desc = png_description(root / "figures" / "hq_pct_vs_step.png")
    assert desc.startswith(report.BAND_TEXT) and "1 sample std" in report.BAND_TEXT and "clipped" in report.BAND_TEXT
    assert report.BAND_TEXT in (root / "report.md").read_text()


def test_all_null_group_is_listed_with_its_reason(sweep, tmp_path, capsys):
    reason = "weights file /w/evil.pth rejected: torch.load(weights_only=True) refused it"
    null = dict(metric(None, None), reason=reason)
    for seed in (0, 1):
        make_run(sweep, ["experiment=toy", "objective=hinge", f"seed={seed}"], metrics={"modes": null},
                 curve=[{"step": 0, "wall_time_s": 0.0, "modes": None}, {"step": 100, "wall_time_s": 1.0, "modes": None}])
    out = tmp_path / "o"
    assert report_cli.main([str(sweep), "--out", str(out), "--metrics", "modes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("objective=hinge"))
    assert row.split()[-1] == "null"
    assert f"null: objective=hinge: modes: {reason}" in lines
    md = (out / "report.md").read_text()
    assert f"| objective=hinge | 0 | null: {reason} |" in md
    desc = png_description(out / "figures" / "modes_vs_step.png")
    assert f"legend: objective=hinge: null ({reason})" in desc.splitlines()
    assert "legend: objective=dragan" in desc.splitlines()


def test_single_evaluation_is_reported_not_drawn_as_empty_axes(tmp_path, capsys):
    root = tmp_path / "s"
    for seed in (0, 1):
        make_run(root, ["objective=once", f"seed={seed}"], metrics={"fid": metric(40.0 + seed, 40.0, higher=False)},
                 curve=[{"step": 100, "wall_time_s": 5.0, "fid": 40.0 + seed}])
        make_run(root, ["objective=twice", f"seed={seed}"], metrics={"fid": metric(30.0, 30.0, higher=False)},
                 curve=[{"step": 50, "wall_time_s": 2.0, "fid": 35.0}, {"step": 100, "wall_time_s": 4.0, "fid": 30.0}])
    assert report_cli.main([str(root)]) == 0
    printed = capsys.readouterr().out
    once = [line for line in printed.splitlines() if line.startswith("one evaluation:")]
    assert len(once) == 1 and "objective=once" in once[0] and "step 100" in once[0]
    desc = png_description(root / "figures" / "fid_vs_step.png")
    assert "one evaluation per run, a point not a curve: objective=once (step 100)" in desc
    assert "objective=twice (step" not in desc
    md = (root / "report.md").read_text()
    assert "one evaluation per run, a point not a curve: objective=once (step 100)" in md


def test_failed_runs_show_their_one_line_error(sweep, tmp_path, capsys):
    run = make_run(sweep, ["experiment=toy", "objective=dragan", "seed=9"], status="failed",
                   curve=[{"step": 0, "wall_time_s": 0.0, "modes": 1.0}])
    body = json.loads((run / "results.json").read_text())
    body["error"] = "RuntimeError: CUDA out of memory\nTried to allocate 2.00 GiB"
    (run / "results.json").write_text(json.dumps(body))
    out = tmp_path / "o"
    assert report_cli.main([str(sweep), "--out", str(out), "--no-figures"]) == 0
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("failed:")]
    assert failed == [f"failed: objective=dragan seed=9: RuntimeError: CUDA out of memory ({run})"]
    row = next(line for line in lines if line.startswith("objective=dragan"))
    assert "1 failed" in row and "running" not in row
    md = (out / "report.md").read_text()
    runs_row = next(line for line in md.splitlines() if line.startswith("| objective=dragan | 9 |"))
    assert "| failed |" in runs_row and "RuntimeError: CUDA out of memory |" in runs_row
    assert "running" not in runs_row and "Tried to allocate" not in md


# --------------------------------------------------------------------------------- --table toy
def toy_metrics(modes, hq, rkl):
    null = dict(metric(None, None, higher=False), reason="no high-quality sample (none within <= 3 std)")
    return {"modes": metric(modes, modes), "hq_pct": metric(hq, hq),
            "reverse_kl": null if rkl is None else metric(rkl, rkl, higher=False)}


@pytest.fixture
def toy_sweep(tmp_path):
    root = tmp_path / "toy"
    for seed, (modes, hq, rkl) in enumerate([(8.0, 80.0, 0.1), (8.0, 90.0, 0.2), (7.0, 70.0, 0.3)]):
        make_run(root, ["experiment=toy", "dataset=ring8", "objective=dragan", f"seed={seed}"],
                 metrics=toy_metrics(modes, hq, rkl))
    for seed, (modes, hq, rkl) in enumerate([(20.0, 60.0, 0.5), (22.0, 60.0, 0.5), (24.0, 60.0, 0.8)]):
        make_run(root, ["experiment=toy", "dataset=grid25", "objective=dragan", f"seed={seed}"],
                 metrics=toy_metrics(modes, hq, rkl))
    # vanilla on ring8: completed, diverged without high-quality samples, failed; no grid25 runs at all.
    make_run(root, ["experiment=toy", "dataset=ring8", "objective=vanilla", "seed=0"], metrics=toy_metrics(1.0, 50.0, 2.0))
    make_run(root, ["experiment=toy", "dataset=ring8", "objective=vanilla", "seed=1"], status="diverged",
             metrics=toy_metrics(0.0, 0.0, None))
    failed = make_run(root, ["experiment=toy", "dataset=ring8", "objective=vanilla", "seed=2"], status="failed")
    body = json.loads((failed / "results.json").read_text())
    body["error"] = "RuntimeError: boom\nsecond line"
    (failed / "results.json").write_text(json.dumps(body))
    return root, failed


def test_mean_se_is_sample_std_over_root_n():
    n, mean, se = report.mean_se([8.0, 8.0, 7.0])
    # s = √(((1/3)² + (1/3)² + (2/3)²)/2) = √(1/3); SE = s/√3 = 1/3 (population std or s/n would differ)
    assert (n, mean) == (3, pytest.approx(23 / 3)) and se == pytest.approx(1 / 3)
    assert report.mean_se([0.5, 0.5, 0.8])[2] == pytest.approx(0.1)
    assert math.isnan(report.mean_se([2.0])[2]) and report.mean_se([])[0] == 0


def test_toy_table_has_the_published_layout(toy_sweep, tmp_path, capsys):
    root, failed = toy_sweep
    out = tmp_path / "o"
    assert report_cli.main([str(root), "--table", "toy", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "standard error" in printed[0] and "std/√n" in printed[0]
    rows, notes_ = report.toy_table(report.find_runs([root]))
    assert rows[0] == ["method", "ring8 runs", "ring8 modes", "ring8 high-quality %", "ring8 reverse KL",
                       "grid25 runs", "grid25 modes", "grid25 high-quality %", "grid25 reverse KL"]
    body = {r[0]: r[1:] for r in rows[1:]}
    assert set(body) == {"objective=dragan", "objective=vanilla"}  # experiment=toy is shared, dataset a column
    # dragan ring8: modes 8, 8, 7 -> 7.67 ± 1/3; hq 80, 90, 70 -> 80 ± 10/√3; KL .1 .2 .3 -> .2 ± .1/√3
    # grid25: modes 20, 22, 24 -> 22 ± 2/√3; hq 60 ± 0; KL .5 .5 .8 -> .6 ± .1
    assert body["objective=dragan"] == ["3", "7.7 ± 0.3", "80.0 ± 5.8", "0.200 ± 0.058",
                                        "3", "22.0 ± 1.2", "60.0 ± 0.0", "0.600 ± 0.100"]
    # vanilla ring8: the diverged run counts (modes 1, 0 -> 0.5 ± 0.5), the failed one is shown in the counts;
    # reverse KL only from the run with high-quality samples (1 of 3, n = 1: no SE)
    assert body["objective=vanilla"] == ["3 (1 diverged, 1 failed)", "0.5 ± 0.5 (2/3)", "25.0 ± 25.0 (2/3)",
                                         f"2.000 {report.N1_MARK} (1/3)", "0", "–", "–", "–"]
    assert notes_ == [f"failed: objective=vanilla dataset=ring8 seed=2: RuntimeError: boom ({failed})"]
    assert notes_[0] in printed
    md = (out / "toy_table.md").read_text()
    assert "| objective=dragan | 3 | 7.7 ± 0.3 | 80.0 ± 5.8 | 0.200 ± 0.058 |" in md and report.TOY_HEADER in md
    assert not (out / "report.csv").exists()  # the toy table replaces the general report


def test_toy_separations_name_the_methods_beyond_standard_error(tmp_path):
    root = tmp_path / "s"
    # ring8 modes: a 8, 8 (8 ± 0); b 7, 8 (7.5 ± 0.5, touches a's interval); c 5, 6 (5.5 ± 0.5, apart).
    # reverse KL (lower is better): a .1 .1, b .3 .5 (0.4 ± 0.1: apart from a), c .05 .25 (0.15 ± 0.1: within)
    values = {"a": [(8.0, 0.1), (8.0, 0.1)], "b": [(7.0, 0.3), (8.0, 0.5)], "c": [(5.0, 0.05), (6.0, 0.25)]}
    for arm, runs in values.items():
        for seed, (modes, rkl) in enumerate(runs):
            make_run(root, ["dataset=ring8", f"arm={arm}", f"seed={seed}"], metrics=toy_metrics(modes, 50.0, rkl))
    lines = report.toy_separations(report.find_runs([root]))
    assert "ring8 modes: best arm=a (8.0 ± 0.0); beyond SE from it: arm=c; within SE: arm=b" in lines
    assert "ring8 reverse KL: best arm=a (0.100 ± 0.000); beyond SE from it: arm=b; within SE: arm=c" in lines
    # equal high-quality % everywhere: the best is the first label, nothing apart
    assert "ring8 high-quality %: best arm=a (50.0 ± 0.0); beyond SE from it: none; within SE: arm=b, arm=c" in lines


def toy_curve(rows):
    """metrics.jsonl rows (step, modes, hq_pct, reverse_kl)."""
    return [{"step": st, "wall_time_s": st / 100, "modes": m, "hq_pct": h, "reverse_kl": k} for st, m, h, k in rows]


def test_at_step_takes_the_last_evaluation_not_an_older_defined_value(tmp_path):
    # reverse KL undefined (null) at step 200: as of 200 it has no value, not step 100's 0.3
    run = make_run(tmp_path / "s", ["dataset=ring8", "seed=0"], results=False,
                   curve=toy_curve([(100, 8.0, 50.0, 0.3), (200, 0.0, 0.0, None), (300, 8.0, 60.0, 0.2)]))
    r = report.find_runs([run.parent])[0]
    assert r.final("reverse_kl", 200) is None and r.final("reverse_kl", 150) == 0.3
    assert r.final("reverse_kl", 300) == 0.2 and r.final("modes", 250) == 0.0


def test_toy_budget_check_is_the_doubling_test_read_at_half_the_steps(tmp_path):
    root = tmp_path / "s"
    # a: modes 6, 8 at step 50 -> 8, 8 at 100 (moved 1.0 > SE 0); hq 90 at 100; b: 7, 7 -> 7, 7 (not moved)
    for arm, rows in {"a": [(6.0, 90.0), (8.0, 90.0)], "b": [(7.0, 20.0), (7.0, 20.0)]}.items():
        for seed, (half, hq) in enumerate(rows):
            final = 8.0 if arm == "a" else 7.0
            make_run(root, ["dataset=ring8", f"arm={arm}", f"seed={seed}"], metrics=toy_metrics(final, hq, 0.1),
                     curve=toy_curve([(50, half, hq, 0.1), (100, final, hq, 0.1)]))
    lines = report.toy_budget_check(report.find_runs([root]))
    assert lines[0].startswith("budget check: step 50 fails the doubling test to step 100")
    assert lines[1].strip() == "best high-quality % at 100: ring8 90.0 (arm=a)"
    assert lines[2].strip() == "mode counts that moved beyond SE: ring8 arm=a 7.0 -> 8.0 (SE 0.0)"
    # as of step 50 there is no evaluation at 25: the check says so instead of guessing
    assert "no evaluation at or before step 25" in report.toy_budget_check(report.find_runs([root]), 50)[0]
    # without the move and with hq >= 80 it passes
    passing = tmp_path / "p"
    for seed in (0, 1):
        make_run(passing, ["dataset=ring8", "arm=a", f"seed={seed}"], metrics=toy_metrics(8.0, 85.0, 0.1),
                 curve=toy_curve([(50, 8.0, 80.0, 0.1), (100, 8.0, 85.0, 0.1)]))
    assert report.toy_budget_check(report.find_runs([passing]))[0].startswith(
        "budget check: step 50 passes the doubling test to step 100")


def test_toy_table_method_is_every_varying_override_but_seed_and_dataset(tmp_path):
    root = tmp_path / "s"
    for pen in ("none", "r1"):
        for seed in (0, 1):
            make_run(root, ["dataset=ring8", "objective=vanilla", f"penalty={pen}", "train.pack=2", f"seed={seed}"],
                     metrics=toy_metrics(8.0 - seed, 100.0, 0.0))
    rows, _ = report.toy_table(report.find_runs([root]))
    assert [r[0] for r in rows[1:]] == ["penalty=none", "penalty=r1"]
    assert rows[1][1:] == ["2", "7.5 ± 0.5", "100.0 ± 0.0", "0.000 ± 0.000"]


def test_toy_table_without_toy_metrics_is_a_one_line_error(tmp_path, capsys):
    root = tmp_path / "cifar"
    make_run(root, ["objective=wgan", "seed=0"], metrics={"fid": metric(50.0, 40.0, higher=False)})
    assert report_cli.main([str(root), "--table", "toy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganbench-report: error: --table toy: no run has modes") and err.count("\n") == 1
    assert "--table" in report_cli.build_parser().format_help() and "standard error" in report_cli.build_parser().format_help()


INCEPTION_REASON = "Inception weights not in /cache/weights-inception.pth and download failed (URLError)"


def image_like_sweep(root, groups=("objective=hinge", "objective=vanilla"), seeds=(0, 1)):
    """An image sweep without Inception weights: IS/FID/KID null in every run with one reason, eval_samples and
    images_seen in every metrics.jsonl row, and ``mnist_is`` (a metric with values) beside them."""
    null = dict(metric(None, None), reason=INCEPTION_REASON)
    runs = []
    for g in groups:
        for seed in seeds:
            curve = [{"step": s, "images_seen": 8 * s, "wall_time_s": s / 10, "eval_samples": 50000,
                      "is_mean": None, "fid": None, "kid_mean": None, "mnist_is": 2.0 + s / 100 + seed}
                     for s in (50, 100)]
            runs.append(make_run(root, ["experiment=cifar", g, f"seed={seed}"], curve=curve,
                                 metrics={"is_mean": null, "fid": dict(null, higher_is_better=False),
                                          "kid_mean": dict(null, higher_is_better=False),
                                          "mnist_is": metric(3.0 + seed, 3.0 + seed)}))
    return runs


def test_metrics_null_in_every_run_are_one_line_not_columns_or_figures(tmp_path, capsys):
    root = tmp_path / "sweep"
    image_like_sweep(root)
    out = tmp_path / "o"
    assert report_cli.main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    line = f"null in every run, not tabulated or plotted: fid, is_mean, kid_mean: {INCEPTION_REASON}"
    # The reason once, in one line, in the printed report and in report.md.
    assert printed.count(INCEPTION_REASON) == 1 and line in printed.splitlines()
    assert md.count(INCEPTION_REASON) == 1 and f"- {line}" in md.splitlines()
    header = printed.splitlines()[1].split()
    assert "mnist_is" in header and not {"fid", "is_mean", "kid_mean"} & set(header)
    md_header = next(x for x in md.splitlines() if x.startswith("| group | n | completed"))
    assert "mnist_is final" in md_header and "fid" not in md_header and "| null" not in md
    assert "## mnist_is" in md and "## fid" not in md and "## is_mean" not in md
    # No figure of a null metric: only mnist_is's two.
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["mnist_is_vs_step.png", "mnist_is_vs_time.png"]
    # report.csv keeps their (empty) columns: a machine-readable table has the same columns whatever ran.
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert rows[0]["fid_final_n"] == "0" and rows[0]["fid_final_mean"] == ""


def test_bookkeeping_fields_are_never_metrics(tmp_path, capsys):
    from ganbench.metric_catalog import BOOKKEEPING

    root = tmp_path / "sweep"
    runs = image_like_sweep(root)
    assert set(BOOKKEEPING) == {"step", "images_seen", "wall_time_s", "eval_samples"}
    assert report.load_run(runs[0]).metric_names() == ["fid", "is_mean", "kid_mean", "mnist_is"]
    out = tmp_path / "o"
    assert report_cli.main([str(root), "--out", str(out)]) == 0
    capsys.readouterr()
    written = (out / "report.md").read_text() + (out / "report.csv").read_text()
    assert not any(name in written for name in ("eval_samples", "images_seen", "wall_time_s"))
    assert not any(p.name.startswith(BOOKKEEPING) for p in (out / "figures").iterdir())
    # Asked for by name: one line, exit 2, nothing written.
    other = tmp_path / "other"
    assert report_cli.main([str(root), "--out", str(other), "--metrics", "mnist_is,eval_samples"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--metrics eval_samples: bookkeeping of metrics.jsonl, not a metric" in err[0]
    assert "mnist_is" in err[0] and not other.exists()


def test_a_group_null_metrics_share_one_line_per_reason(tmp_path, capsys):
    """A group whose metrics are all null while another group has values: a null cell each, and one note for
    the group and its reason (not one per metric)."""
    root = tmp_path / "sweep"
    null = dict(metric(None, None), reason="no sample in the high-quality region")
    for seed in (0, 1):
        make_run(root, ["objective=dragan", f"seed={seed}"], metrics={"hq_pct": metric(50.0, 60.0),
                                                                       "reverse_kl": metric(0.5, 0.4, higher=False)},
                 curve=[{"step": 100, "wall_time_s": 1.0, "hq_pct": 50.0, "reverse_kl": 0.5}])
        make_run(root, ["objective=vanilla", f"seed={seed}"], metrics={"hq_pct": null, "reverse_kl": null},
                 curve=[{"step": 100, "wall_time_s": 1.0, "hq_pct": None, "reverse_kl": None}])
    assert report_cli.main([str(root), "--out", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x for x in lines if x.startswith("null")] == \
        ["null: objective=vanilla: hq_pct, reverse_kl: no sample in the high-quality region"]
    assert next(x for x in lines if x.startswith("objective=vanilla")).split()[-2:] == ["null", "null"]


def test_a_figure_with_nothing_drawn_is_not_written(tmp_path):
    """A metric without a single value in the groups given (a legend entry of reasons only) writes no PNG and
    no figures folder."""
    root = tmp_path / "sweep"
    image_like_sweep(root)
    runs = report.find_runs([root])
    groups = report.group_runs(runs)
    report.summarize_groups(groups, ["fid", "mnist_is"])
    assert all("fid" in g.null_reasons for g in groups)
    assert figures.plot_figures(tmp_path / "figs", groups, ["fid"]) == []
    assert not (tmp_path / "figs").exists()
    assert [f.path.name for f in figures.plot_figures(tmp_path / "figs", groups, ["mnist_is"])] == \
        ["mnist_is_vs_step.png", "mnist_is_vs_time.png"]


def test_a_gradient_norm_logged_once_is_drawn_not_a_blank_panel(tmp_path):
    """A run shorter than 2·train.log_every logs grad/D_real_norm once: a line through one point draws nothing,
    so the point is marked. Its pixels (tab:red) lie mid-panel, away from the red axis label and ticks."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    from ganbench.report import gradnorm as report_gradnorm

    run = make_run(tmp_path / "s", ["objective=a", "seed=0"])
    writer = SummaryWriter(str(run))
    writer.add_scalar(report_gradnorm.TAG, 0.5, 10)
    writer.close()
    figures = report_gradnorm.plot_grad_norm(tmp_path / "figures", report.group_runs(report.find_runs([tmp_path / "s"])))
    pixels = np.asarray(Image.open(figures[0].path).convert("RGB")).astype(int)
    red = np.abs(pixels - np.array([214, 39, 40])).sum(-1) < 30   # tab:red
    width = red.shape[1]
    assert red[:, int(0.3 * width):int(0.9 * width)].sum() > 10
