"""ganbench-report --table bogonet (the DRAGAN paper's Table 1 and the per-instance pairwise table) and the
gradient-norm figure, on constructed run directories whose numbers are worked out by hand below
(tests/bogonet_sweep.py holds the sweep)."""

import math
import statistics

import pytest

import bogonet_sweep
from conftest import POINTS, run_train
from ganbench.report import bogonet as report_bogonet, cli as report_cli, gradnorm as report_gradnorm, tables as report

DRAGAN, VANILLA, WGAN = "objective=dragan", "objective=vanilla", "objective=wgan_gp"


@pytest.fixture
def sweep(tmp_path):
    return bogonet_sweep.build(tmp_path / "sweep")


def bogonet(sweep, x="time"):
    runs = report.find_runs([sweep])
    return report_bogonet.bogonet(runs, "mnist_is", x)


def test_area_is_the_unnormalised_trapezoid():
    # (1-0)(1+3)/2 + (3-1)(3+2)/2 = 2 + 5 = 7.
    assert report_bogonet.area([0, 1, 3], [1, 3, 2]) == 7
    assert report_bogonet.area([5], [4]) is None


def test_sign_test_by_hand():
    # 4 of 5 decided instances: P(X >= 4) = (5 + 1)/32, two-sided twice that.
    assert report_bogonet.sign_test(4, 1) == pytest.approx(12 / 32)
    assert report_bogonet.sign_test(5, 1) == pytest.approx(2 * 7 / 64)
    assert report_bogonet.sign_test(3, 3) == pytest.approx(1.0)
    assert report_bogonet.sign_test(0, 0) is None


def test_table_one_columns_by_hand(sweep):
    res = bogonet(sweep)
    assert res["algorithms"] == [DRAGAN, VANILLA, WGAN]
    assert res["instances"] == ["0", "1", "2", "3", "4", "5"]
    header, *rows = res["table"]
    assert header == ["algorithm", "instances", "final mean", "final std", "AUC mean", "AUC std", "qual. score"]
    by = {r[0]: r for r in rows}
    # vanilla: finals 3, 2, 5, 1, 2, 2 -> mean 2.5, sample std sqrt(9.5/5). AUC against minutes (evaluations
    # 1 min apart): (1+2)/2 + (2+f)/2 = 2.5 + f/2 -> 4, 3.5, 5, 3, 3.5, 3.5.
    assert by[VANILLA][1:4] == ["6", "2.500", f"{math.sqrt(9.5 / 5):.3f}"]
    v_auc = [4, 3.5, 5, 3, 3.5, 3.5]
    assert by[VANILLA][4:6] == [f"{statistics.mean(v_auc):.2f}", f"{statistics.stdev(v_auc):.2f}"]
    # dragan: evaluations 2 min apart: 2·((1+m)/2 + (m+f)/2) = 1 + 2m + f -> 9, 8, 9, 7, 11, 3 (m = 0 on 5).
    d_final = [4, 3, 4, 2, 6, 2]
    d_auc = [9, 8, 9, 7, 11, 3]
    assert by[DRAGAN][2:6] == [f"{statistics.mean(d_final):.3f}", f"{statistics.stdev(d_final):.3f}",
                               f"{statistics.mean(d_auc):.2f}", f"{statistics.stdev(d_auc):.2f}"]
    assert by[DRAGAN][6] == "–"   # no judgement given
    # wgan_gp: 1.5 throughout on instances 0-3: AUC 2 min · 1.5 = 3; not run on 4 and 5.
    assert by[WGAN][1:6] == ["4", "1.500", "0.000", "3.00", "0.00"]
    assert any("objective=wgan_gp: not run on instance(s) 4, 5" == n for n in res["notes"])
    # dragan's curves span 6 - 2 = 4 minutes, the others' 3 - 1 = 2: the time AUC also measures speed.
    note = next(n for n in res["notes"] if "span different wall-clock times" in n)
    assert f"{DRAGAN} 4, {VANILLA} 2, {WGAN} 2" in note
    assert not any("wall-clock" in n for n in bogonet(sweep, x="step")["notes"])


def test_pairwise_table_and_sign_tests_by_hand(sweep):
    res = bogonet(sweep)
    pairs = {(p["a"], p["b"], p["kind"]): p for p in res["pairs"]}
    # Final: dragan ahead on 0, 1, 3, 4; vanilla on 2; tie on 5.
    p = pairs[(DRAGAN, VANILLA, "final")]
    assert (p["wins_a"], p["wins_b"], p["ties"], p["n"]) == (4, 1, 1, 6)
    assert p["p"] == pytest.approx(12 / 32)
    # AUC over minutes: dragan 9, 8, 9, 7, 11, 3 vs vanilla 4, 3.5, 5, 3, 3.5, 3.5 -> 5 to 1.
    p = pairs[(DRAGAN, VANILLA, "auc")]
    assert (p["wins_a"], p["wins_b"], p["ties"]) == (5, 1, 0) and p["p"] == pytest.approx(14 / 64)
    # wgan_gp against vanilla only where both ran (0-3): finals 1.5 vs 3, 2, 5, 1 -> 1 to 3.
    p = pairs[(VANILLA, WGAN, "final")]
    assert (p["wins_a"], p["wins_b"], p["n"]) == (3, 1, 4)
    header, *rows = res["per_instance"]
    col = header.index(f"ahead (final): {DRAGAN} vs {VANILLA}")
    assert [r[col] for r in rows] == [DRAGAN, DRAGAN, VANILLA, DRAGAN, DRAGAN, "tie"]
    assert [r[header.index(f"{WGAN} final")] for r in rows] == ["1.500"] * 4 + ["–", "–"]


def test_auc_over_steps_differs_from_time_as_worked_out(sweep):
    # Over thousands of steps both have unit spacing: dragan 0.5 + m + f/2 -> 4.5, 4, 4.5, 3.5, 5.5, 1.5;
    # vanilla 4, 3.5, 5, 3, 3.5, 3.5 -> dragan ahead on 0, 1, 3, 4, vanilla on 2 and 5.
    res = bogonet(sweep, x="step")
    d = [res["values"][DRAGAN][str(i)]["auc"] for i in range(6)]
    assert d == pytest.approx([4.5, 4, 4.5, 3.5, 5.5, 1.5])
    p = next(p for p in res["pairs"] if p["a"] == DRAGAN and p["b"] == VANILLA and p["kind"] == "auc")
    assert (p["wins_a"], p["wins_b"]) == (4, 2) and p["p"] == pytest.approx(44 / 64)


def test_cli_writes_the_table_and_says_what_it_measured(sweep, capsys):
    assert report_cli.main([str(sweep), "--table", "bogonet"]) == 0
    out = capsys.readouterr().out
    assert "score: mnist_is (higher is better)" in out and "wall-clock minutes" in out
    assert "final mnist_is: objective=dragan ahead on 4, objective=vanilla on 1, ties 1" in out
    assert "p = 0.375" in out
    md = (sweep / "bogonet_table.md").read_text()
    assert "| algorithm | instances | final mean | final std | AUC mean | AUC std | qual. score |" in md
    assert "## Pairwise, per instance" in md
    rows = (sweep / "bogonet_instances.csv").read_text().splitlines()
    assert rows[0] == "algorithm,instance,runs,finished,mnist_is_final,mnist_is_auc_time"
    assert len(rows) == 1 + 6 + 6 + 4


def test_score_is_the_headline_and_can_be_chosen(sweep, capsys):
    runs = report.find_runs([sweep])
    assert report_bogonet.pick_score(runs, None) == "mnist_is"
    assert report_cli.main([str(sweep), "--table", "bogonet", "--score", "fid"]) == 2
    assert "--score fid: no such metric (have: mnist_is)" in capsys.readouterr().err


def test_several_seeds_of_one_instance_are_averaged(tmp_path):
    root = tmp_path / "s"
    for seed, final in ((0, 2.0), (1, 4.0)):
        curve = [{"step": 1, "wall_time_s": 60.0, "mnist_is": 1.0}, {"step": 2, "wall_time_s": 120.0, "mnist_is": final}]
        bogonet_sweep.make_run(root, ["objective=dragan", "arch.seed=7", f"seed={seed}"], curve)
    running = bogonet_sweep.make_run(root, ["objective=dragan", "arch.seed=7", "seed=2"],
                                     [{"step": 1, "wall_time_s": 60.0, "mnist_is": 9.0}], status="running")
    assert running.is_dir()
    res = report_bogonet.bogonet(report.find_runs([root]), "mnist_is")
    cell = res["values"]["objective=dragan"]["7"]
    # The running run is not finished: mean of 2 and 4; AUC mean of (1+2)/2 and (1+4)/2.
    assert (cell["final"], cell["auc"], cell["runs"], cell["finished"]) == (3.0, 2.0, 3, 2)
    assert any("several runs" in n for n in res["notes"])


def test_near_equal_values_tie_within_the_relative_tolerance(tmp_path, capsys):
    # Two collapsed runs: 1.0 and 1.0000005 tie under the default 1e-3; 2.0 vs 2.003 differ by 0.15 % > 0.1 %.
    root = tmp_path / "s"
    for alg, finals in (("vanilla", [1.0, 2.0]), ("dragan", [1.0000005, 2.003])):
        for inst, f in enumerate(finals):
            curve = [{"step": 1, "wall_time_s": 60.0, "mnist_is": 1.0}, {"step": 2, "wall_time_s": 120.0, "mnist_is": f}]
            bogonet_sweep.make_run(root, [f"objective={alg}", f"arch.seed={inst}", "seed=0"], curve)
    runs = report.find_runs([root])
    p = report_bogonet.bogonet(runs, "mnist_is")["pairs"][0]
    assert (p["kind"], p["wins_a"], p["wins_b"], p["ties"]) == ("final", 1, 0, 1)
    p = report_bogonet.bogonet(runs, "mnist_is", tie_rtol=0.0)["pairs"][0]
    assert (p["wins_a"], p["ties"]) == (2, 0)
    assert report_cli.main([str(root), "--table", "bogonet", "--tie-rtol", "0"]) == 0
    assert "ties within a relative 0 (--tie-rtol)" in capsys.readouterr().out
    assert report_cli.main([str(root), "--table", "bogonet", "--tie-rtol", "1.5"]) == 2
    assert "--tie-rtol: must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_a_run_without_the_instance_key_is_a_one_line_error(tmp_path, capsys):
    bogonet_sweep.make_run(tmp_path / "s", ["objective=dragan", "seed=0"],
                           [{"step": 1, "wall_time_s": 1.0, "mnist_is": 2.0}])
    assert report_cli.main([str(tmp_path / "s"), "--table", "bogonet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no arch.seed (the BogoNet instance)" in err and "--instance-key" in err and "\n" not in err
    # Another key names the instances: here the run seed.
    assert report_cli.main([str(tmp_path / "s"), "--table", "bogonet", "--instance-key", "seed"]) == 0


@pytest.mark.parametrize("argv,words", [
    (["--judge", "--table", "bogonet"], ["--judge writes the judging page only"]),
    (["--judge-score", "x.json", "--table", "toy"], ["--judge-score goes with --table bogonet"]),
    (["--score", "mnist_is"], ["--score: only with --table bogonet or --judge"]),
    (["--auc-x", "step"], ["--auc-x: only with"]),
    (["--table", "bogonet", "--judge-seed", "3"], ["--judge-seed: only with --judge"]),
    (["--judge", "--tie-rtol", "0.01"], ["--tie-rtol: only with --table bogonet"]),
])
def test_options_of_another_mode_are_refused(sweep, capsys, argv, words):
    before = sorted(p.name for p in sweep.iterdir())
    assert report_cli.main([str(sweep), *argv]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and err.count("\n") == 1
    assert sorted(p.name for p in sweep.iterdir()) == before


# --------------------------------------------------------------------------------------------- Figure 1
def test_gradient_norm_figure_from_a_real_run(tmp_path, capsys):
    """A real 2-D run logs grad/D_real_norm every train.log_every steps; the report draws it with the modes."""
    run = tmp_path / "sweep" / "objective=vanilla" / "seed=0"
    run_train(run, POINTS + ["objective=vanilla", "train.iterations=40", "train.log_every=10", "eval.every=20",
                             "metrics.names=[modes]", "train.ckpt_every=20"])
    steps, norms = report_gradnorm.grad_norm_series(run)
    assert steps == [10, 20, 30, 40] and all(v >= 0 and math.isfinite(v) for v in norms)
    runs = report.find_runs([tmp_path / "sweep"])
    assert report_gradnorm.mode_metric(runs[0]) == "modes"
    assert report_cli.main([str(tmp_path / "sweep")]) == 0
    png = tmp_path / "sweep" / "figures" / "grad_norm_all.png"
    assert png.is_file()
    from PIL import Image

    meta = Image.open(png).text
    assert "grad/D_real_norm" in meta["Title"] and "mode metric" in meta["Description"]
    assert "grad_norm_all.png" in (tmp_path / "sweep" / "report.md").read_text()


def test_no_gradient_figure_without_event_files(sweep):
    runs = report.find_runs([sweep])
    groups = report.group_runs(runs)
    assert report_gradnorm.plot_grad_norm(sweep / "figures", groups) == []
    assert report_cli.main([str(sweep)]) == 0
    assert not list((sweep / "figures").glob("grad_norm_*.png"))
