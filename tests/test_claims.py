"""Paper claims as data (ganbench/report/claims.py): fabricated sweeps whose numbers make every kind of check
reproduce, fail and lack data (the expected verdicts and numbers computed here by hand), the report's claims
section, and every comparison preset's claims list."""

import json

import pytest
import yaml

from ganbench.report import claims, cli as report_cli, tables as report
from ganbench.errors import ConfigError


def make_run(root, overrides, config_claims, metrics=None, curve=None, status="completed", config=None):
    """A run dir as the runner writes it; its saved config (.hydra/config.yaml) carries the preset's claims."""
    name = ",".join(o for o in overrides if not o.startswith("seed=")) or "run"
    seed = next((o for o in overrides if o.startswith("seed=")), "seed=0").split("=")[1]
    run = root / name / f"seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**(config or {}), "claims": config_claims}))
    if curve is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    entries = {k: {"final": v, "best": v, "higher_is_better": k not in report.LOWER_IS_BETTER}
               for k, v in (metrics or {}).items()}
    body = {"status": status, "step": 100, "iterations": 100, "metrics": entries}
    (run / "results.json").write_text(json.dumps(body))
    return run


def sweep(root, cells, claim_list, extra=()):
    """Runs from {arm: [final modes per seed]} under experiment=toy, plus ``extra`` overrides."""
    for arm, values in cells.items():
        for seed, value in enumerate(values):
            make_run(root, ["experiment=toy", f"arm={arm}", *extra, f"seed={seed}"], claim_list, {"modes": value})
    return report.find_runs([root])


def verdict(claim_node, runs, at_step=None):
    return claims.evaluate(claims.parse(claim_node, 0), runs, at_step)


def claim(**check):
    return {"id": "c", "statement": "the paper's words", "source": "Paper §1, Table 1", **check}


BETTER_SE = claim(better={"metric": "modes", "arm": "dragan", "than": "vanilla", "by": "se"})


# ---------------------------------------------------------------------------------------------
# better


def test_better_by_se_reproduced_with_hand_computed_numbers(tmp_path):
    # dragan 10, 12, 14: mean 12, s = 2, SE = 2/√3 = 1.155; vanilla 4, 5, 6: mean 5, SE = 1/√3 = 0.577
    runs = sweep(tmp_path, {"dragan": [10, 12, 14], "vanilla": [4, 5, 6]}, [BETTER_SE])
    v = verdict(BETTER_SE, runs)
    assert v.status == "reproduced"
    assert "dragan 12 ± 1.2 (n=3)" in v.numbers and "vanilla 5 ± 0.58 (n=3)" in v.numbers
    assert v.line().startswith("claim c (Paper §1, Table 1): reproduced: modes (final, mean ± SE over runs")


def test_better_by_se_not_reproduced_when_intervals_overlap(tmp_path):
    # dragan 6, 8: mean 7, SE 1 -> [6, 8]; vanilla 5, 7: mean 6, SE 1 -> [5, 7]: overlap, though 7 > 6
    runs = sweep(tmp_path, {"dragan": [6, 8], "vanilla": [5, 7]}, [BETTER_SE])
    v = verdict(BETTER_SE, runs)
    assert v.status == "not reproduced" and "dragan does not beat vanilla" in v.numbers
    # the same numbers by plain means: 7 > 6
    by_mean = claim(better={**BETTER_SE["better"], "by": "mean"})
    assert verdict(by_mean, runs).status == "reproduced"


def test_better_reversed_is_reported_plainly(tmp_path):
    runs = sweep(tmp_path, {"dragan": [1, 2, 3], "vanilla": [10, 11, 12]}, [BETTER_SE])
    assert verdict(BETTER_SE, runs).status == "not reproduced"


def test_better_lacks_data_with_one_seed_or_a_missing_arm(tmp_path):
    runs = sweep(tmp_path, {"dragan": [10], "vanilla": [4, 5, 6]}, [BETTER_SE])
    v = verdict(BETTER_SE, runs)
    assert v.status == "not enough data" and "fewer than 2 values: dragan" in v.numbers
    runs = sweep(tmp_path / "b", {"vanilla": [4, 5, 6]}, [BETTER_SE])
    v = verdict(BETTER_SE, runs)
    assert v.status == "not enough data" and "dragan: no run vs vanilla 5 ± 0.58 (n=3)" in v.numbers
    make_run(tmp_path / "b", ["experiment=toy", "arm=dragan", "seed=0"], [BETTER_SE], {"hq_pct": 1.0})
    v = verdict(BETTER_SE, report.find_runs([tmp_path / "b"]))
    assert v.status == "not enough data" and "dragan – (0/1 runs with a value)" in v.numbers


def test_better_follows_a_lower_is_better_metric(tmp_path):
    node = claim(better={"metric": "reverse_kl", "arm": "pacgan2", "than": "vanilla", "by": "se"})
    for arm, values in {"pacgan2": [0.1, 0.2, 0.3], "vanilla": [0.9, 1.0, 1.1]}.items():
        for seed, value in enumerate(values):
            make_run(tmp_path, [f"arm={arm}", f"seed={seed}"], [node], {"reverse_kl": value})
    runs = report.find_runs([tmp_path])
    v = verdict(node, runs)
    assert v.status == "reproduced" and "lower is better" in v.numbers
    flipped = claim(better={**node["better"], "arm": "vanilla", "than": "pacgan2"})
    assert verdict(flipped, runs).status == "not reproduced"
    assert verdict(claim(better={**node["better"], "by": "mean"}), runs).status == "reproduced"      # 0.2 < 1.0
    assert verdict(claim(better={**flipped["better"], "by": "mean"}), runs).status == "not reproduced"


def test_better_than_several_arms_needs_every_one(tmp_path):
    node = claim(better={"metric": "modes", "arm": "dragan", "than": ["vanilla", "wgan_gp"], "by": "mean"})
    runs = sweep(tmp_path, {"dragan": [10, 12], "vanilla": [4, 5], "wgan_gp": [13, 14]}, [node])
    v = verdict(node, runs)
    assert v.status == "not reproduced" and "does not beat wgan_gp" in v.numbers and "vanilla," not in v.numbers


def test_where_selects_runs_and_a_failed_run_takes_no_part(tmp_path):
    node = {**BETTER_SE, "where": {"dataset": "grid25"}}
    sweep(tmp_path, {"dragan": [1, 1, 1], "vanilla": [9, 9, 9]}, [node], extra=["dataset=ring8"])
    sweep(tmp_path, {"dragan": [10, 12, 14], "vanilla": [4, 5, 6]}, [node], extra=["dataset=grid25"])
    make_run(tmp_path, ["experiment=toy", "arm=dragan", "dataset=grid25", "seed=9"], [node], {"modes": 0.0},
             status="failed")
    runs = report.find_runs([tmp_path])
    v = verdict(node, runs)
    assert v.status == "reproduced" and "dragan 12 ± 1.2 (n=3/4)" in v.numbers
    none = verdict({**BETTER_SE, "where": {"dataset": "swissroll"}}, runs)
    assert none.status == "not enough data" and "no run matches dataset=swissroll" in none.numbers


def test_arm_key_reads_another_config_key(tmp_path):
    node = claim(better={"metric": "modes", "arm": "dragan", "than": "vanilla", "by": "mean"}, arm_key="objective")
    for objective, value in (("dragan", 5.0), ("vanilla", 3.0)):
        make_run(tmp_path, [f"objective={objective}", "seed=0"], [node], {"modes": value})
    assert verdict(node, report.find_runs([tmp_path])).status == "reproduced"


def test_metric_alternatives_take_the_first_reported(tmp_path):
    node = claim(better={"metric": ["is_mean", "mnist_is"], "arm": "dragan", "than": "vanilla", "by": "mean"})
    for arm, value in (("dragan", 8.0), ("vanilla", 6.0)):
        make_run(tmp_path, [f"arm={arm}", "seed=0"], [node], {"mnist_is": value})
    v = verdict(node, report.find_runs([tmp_path]))
    assert v.status == "reproduced" and v.numbers.startswith("mnist_is (final")


def test_at_step_reads_the_curve(tmp_path):
    node = claim(better={"metric": "modes", "arm": "dragan", "than": "vanilla", "by": "mean"})
    for arm, (early, late) in (("dragan", (2.0, 9.0)), ("vanilla", (5.0, 6.0))):
        make_run(tmp_path, [f"arm={arm}", "seed=0"], [node], {"modes": late},
                 curve=[{"step": 50, "modes": early}, {"step": 100, "modes": late}])
    runs = report.find_runs([tmp_path])
    assert verdict(node, runs).status == "reproduced"
    assert verdict(node, runs, at_step=50).status == "not reproduced"   # 2 < 5 at step 50


# ---------------------------------------------------------------------------------------------
# order


ORDER = claim(order={"metric": "modes", "arms": ["vanilla", "unrolled", "dragan"], "by": "mean"})


def test_order_reproduced_fails_and_lacks_data(tmp_path):
    runs = sweep(tmp_path / "a", {"vanilla": [1, 2], "unrolled": [3, 4], "dragan": [5, 6]}, [ORDER])
    v = verdict(ORDER, runs)
    assert v.status == "reproduced" and "vanilla 1.5 (n=2) < unrolled 3.5 (n=2) < dragan 5.5 (n=2)" in v.numbers
    runs = sweep(tmp_path / "b", {"vanilla": [1, 2], "unrolled": [7, 8], "dragan": [5, 6]}, [ORDER])
    v = verdict(ORDER, runs)
    assert v.status == "not reproduced" and "out of order: unrolled vs dragan" in v.numbers
    runs = sweep(tmp_path / "c", {"vanilla": [1, 2], "dragan": [5, 6]}, [ORDER])
    assert verdict(ORDER, runs).status == "not enough data"


def test_order_of_metrics_in_one_run_as_the_gmm_lab_reports_them(tmp_path):
    node = claim(order={"metrics": ["first_order_success", "unrolled_success", "optimal_success"], "by": "mean"})
    make_run(tmp_path / "a", ["experiment=gmm_heatmap"], [node],
             {"first_order_success": 0.102, "unrolled_success": 0.529, "optimal_success": 1.0})
    v = verdict(node, report.find_runs([tmp_path / "a"]))
    assert v.status == "reproduced" and "first_order_success 0.102 (n=1) < unrolled_success 0.529" in v.numbers
    make_run(tmp_path / "b", ["experiment=gmm_heatmap"], [node],
             {"first_order_success": 0.6, "unrolled_success": 0.529, "optimal_success": 1.0})
    assert verdict(node, report.find_runs([tmp_path / "b"])).status == "not reproduced"
    make_run(tmp_path / "c", ["experiment=gmm_heatmap"], [node], {"first_order_success": 0.1, "optimal_success": 1.0})
    assert verdict(node, report.find_runs([tmp_path / "c"])).status == "not enough data"


# ---------------------------------------------------------------------------------------------
# at_least / at_most


def test_at_least_for_the_best_arm_and_a_named_arm(tmp_path):
    node = claim(at_least={"metric": "modes", "arm": "best", "value": 21})
    runs = sweep(tmp_path, {"dragan": [4, 5], "vanilla": [20, 22], "wgan": [1, 2]}, [node])
    v = verdict(node, runs)
    assert v.status == "reproduced" and "best arm vanilla 21" in v.numbers and ">= 21" in v.numbers   # 21 >= 21
    assert verdict(claim(at_least={"metric": "modes", "arm": "best", "value": 21.5}), runs).status == "not reproduced"
    assert verdict(claim(at_least={"metric": "modes", "arm": "dragan", "value": 20}), runs).status == "not reproduced"
    assert verdict(claim(at_least={"metric": "modes", "arm": "wgan_gp", "value": 20}), runs).status == "not enough data"
    assert verdict(claim(at_least={"metric": "hq_pct", "arm": "best", "value": 80}), runs).status == "not enough data"


def test_at_most_over_all_runs(tmp_path):
    node = claim(at_most={"metric": "optimal_final_tv", "value": 0.1})
    make_run(tmp_path, ["experiment=gmm_trajectory"], [node], {"optimal_final_tv": 0.014})
    v = verdict(node, report.find_runs([tmp_path]))
    assert v.status == "reproduced" and "optimal_final_tv (final, mean over runs): all runs 0.014 (n=1)" in v.numbers
    assert verdict(claim(at_most={"metric": "optimal_final_tv", "value": 0.01}),
                   report.find_runs([tmp_path])).status == "not reproduced"


# ---------------------------------------------------------------------------------------------
# events


def test_drop_after_peak_by_hand():
    assert claims.drop_after_peak([1, 5, 2, 4, 1.5]) == 3.5      # peak 5, then 1.5
    assert claims.drop_after_peak([1, 2, 3, 4]) == 0.0           # rising: no drop
    assert claims.drop_after_peak([4, 3, 6, 5]) == 1.0           # the fall from 4 to 3 and from 6 to 5
    assert claims.drop_after_peak([]) == 0.0


COLLAPSE = [1.0, 5.0, 2.0, 4.0]    # a drop of 3 after the peak 5
STEADY = [1.0, 3.0, 4.5, 5.0]      # no drop


def _curves(root, arm, curves, node, status="completed"):
    for seed, values in enumerate(curves):
        rows = [{"step": 100 * (i + 1), "mnist_is": v} for i, v in enumerate(values)]
        make_run(root, [f"arm={arm}", f"seed={seed}"], [node], {"mnist_is": values[-1]} if values else {}, curve=rows,
                 status=status)


def test_events_in_at_least_reproduced_fails_and_lacks_data(tmp_path):
    node = claim(events={"metric": "mnist_is", "kind": "drop_after_peak", "size": 2, "arm": "vanilla",
                         "in_at_least": 2})
    _curves(tmp_path / "a", "vanilla", [COLLAPSE, COLLAPSE, STEADY], node)
    v = verdict(node, report.find_runs([tmp_path / "a"]))
    assert v.status == "reproduced" and "2 of 3 with a drop_after_peak >= 2" in v.numbers and "0: 3," in v.numbers
    _curves(tmp_path / "b", "vanilla", [COLLAPSE, STEADY, STEADY], node)
    assert verdict(node, report.find_runs([tmp_path / "b"])).status == "not reproduced"
    _curves(tmp_path / "c", "vanilla", [COLLAPSE, [3.0]], node)   # one curve of 2+ evaluations
    v = verdict(node, report.find_runs([tmp_path / "c"]))
    assert v.status == "not enough data" and "1 of the arm's 2 runs have a curve" in v.numbers


def test_events_in_at_most_zero(tmp_path):
    node = claim(events={"metric": "mnist_is", "kind": "drop_after_peak", "size": 2, "arm": "dragan",
                         "in_at_most": 0})
    _curves(tmp_path / "a", "dragan", [STEADY, STEADY, STEADY], node)
    assert verdict(node, report.find_runs([tmp_path / "a"])).status == "reproduced"
    _curves(tmp_path / "b", "dragan", [STEADY, COLLAPSE, STEADY], node)
    assert verdict(node, report.find_runs([tmp_path / "b"])).status == "not reproduced"
    _curves(tmp_path / "c", "vanilla", [STEADY], node)   # no dragan run at all
    assert verdict(node, report.find_runs([tmp_path / "c"])).status == "not enough data"


def test_events_of_runs_still_training_count_only_at_a_step_they_reached(tmp_path):
    """A curve cut short proves neither stability nor collapse: runs still training take no part unless
    --at-step names a step they reached (the mnist_one_hidden_layer sweep's DRAGAN arm at 18,000 of 200,000
    steps was once called 'reproduced' for never collapsing)."""
    node = claim(events={"metric": "mnist_is", "kind": "drop_after_peak", "size": 2, "arm": "dragan",
                         "in_at_most": 0})
    _curves(tmp_path / "a", "dragan", [STEADY, STEADY, STEADY], node, status="running")
    v = verdict(node, report.find_runs([tmp_path / "a"]))
    assert v.status == "not enough data", v.numbers
    assert "3 of the arm's runs still training take no part (compare at a step they reached: --at-step)" in v.numbers
    reached = 100 * len(STEADY)
    assert verdict(node, report.find_runs([tmp_path / "a"]), at_step=reached).status == "reproduced"
    assert verdict(node, report.find_runs([tmp_path / "a"]), at_step=reached + 100).status == "not enough data"


# ---------------------------------------------------------------------------------------------
# wins


def _instances(root, table, node):
    """{instance: {arm: [finals over seeds]}} as BogoNet runs (arch.seed = the instance)."""
    for instance, arms in table.items():
        for arm, values in arms.items():
            for seed, value in enumerate(values):
                make_run(root, [f"arch.seed={instance}", f"arm={arm}", f"seed={seed}"], [node], {"mnist_is": value})
    return report.find_runs([root])


def test_wins_count_and_share(tmp_path):
    node = claim(wins={"metric": "mnist_is", "arm": "dragan", "over": ["vanilla", "wgan_gp"], "per": "arch.seed",
                       "at_least": 2})
    # instance 0: dragan 5 beats 4, 3; 1: dragan mean 3.5 (3, 4) beats 3, 2; 2: dragan 2 loses to vanilla 6
    table = {0: {"dragan": [5], "vanilla": [4], "wgan_gp": [3]},
             1: {"dragan": [3, 4], "vanilla": [3], "wgan_gp": [2]},
             2: {"dragan": [2], "vanilla": [6], "wgan_gp": [1]},
             3: {"dragan": [9], "vanilla": [1]}}   # no wgan_gp: not compared
    runs = _instances(tmp_path, table, node)
    v = verdict(node, runs)
    assert v.status == "reproduced" and "on 2 of 3 instances (arch.seed)" in v.numbers
    assert verdict(claim(wins={**node["wins"], "at_least": 3}), runs).status == "not reproduced"
    share = {k: v for k, v in node["wins"].items() if k != "at_least"}
    assert verdict(claim(wins={**share, "share": 0.6}), runs).status == "reproduced"      # 2/3 >= 0.6
    assert verdict(claim(wins={**share, "share": 0.7}), runs).status == "not reproduced"  # 2/3 < 0.7
    assert verdict(claim(wins={**node["wins"], "at_least": 4}), runs).status == "not enough data"  # 3 compared
    lonely = _instances(tmp_path / "b", {0: {"dragan": [5]}}, node)
    assert verdict(node, lonely).status == "not enough data"


# ---------------------------------------------------------------------------------------------
# runs_per_arm: a sweep still training neither reproduces nor refutes its claim


def test_runs_per_arm_holds_the_verdict_until_every_arm_has_its_runs(tmp_path):
    node = {**BETTER_SE, "runs_per_arm": 3}
    # dragan 10, 12, 14 (12 ± 1.2) would beat vanilla 4, 5 (4.5 ± 0.5) by SE: but vanilla has 2 of its 3 runs
    runs = sweep(tmp_path / "a", {"dragan": [10, 12, 14], "vanilla": [4, 5]}, [node])
    v = verdict(node, runs)
    assert v.status == "not enough data", v.numbers
    assert "dragan 12 ± 1.2 (n=3) vs vanilla 4.5 ± 0.5 (n=2)" in v.numbers          # the numbers still shown
    assert v.numbers.endswith("; the protocol has 3 runs per arm, entered so far: dragan 3, vanilla 2")
    assert verdict(BETTER_SE, runs).status == "reproduced"                         # without the key: as before
    # every arm complete: the check's own verdict, either way
    full = sweep(tmp_path / "b", {"dragan": [10, 12, 14], "vanilla": [4, 5, 6]}, [node])
    assert verdict(node, full).status == "reproduced"
    assert "entered so far" not in verdict(node, full).numbers
    lost = sweep(tmp_path / "c", {"dragan": [1, 2, 3], "vanilla": [4, 5, 6]}, [node])
    assert verdict(node, lost).status == "not reproduced"


def test_runs_per_arm_counts_finished_runs_and_those_past_at_step(tmp_path):
    node = claim(better={"metric": "mnist_is", "arm": "dragan", "than": "vanilla", "by": "mean"}, runs_per_arm=2)
    low, high = ([{"step": 50, "mnist_is": 1.0}, {"step": 100, "mnist_is": v}] for v in (1.5, 3.0))
    for seed in (0, 1):
        make_run(tmp_path, ["arm=vanilla", f"seed={seed}"], [node], {"mnist_is": 1.5}, curve=low)
    make_run(tmp_path, ["arm=dragan", "seed=0"], [node], {"mnist_is": 3.0}, curve=high)
    make_run(tmp_path, ["arm=dragan", "seed=1"], [node], {"mnist_is": 3.0}, curve=high, status="running")
    runs = report.find_runs([tmp_path])
    v = verdict(node, runs)
    assert v.status == "not enough data" and v.numbers.endswith("entered so far: dragan 1, vanilla 2"), v.numbers
    assert verdict(node, runs, at_step=100).status == "reproduced"     # the running one reached step 100
    assert verdict(node, runs, at_step=150).status == "not enough data"
    make_run(tmp_path / "x", ["arm=dragan", "seed=0"], [node], {"mnist_is": 3.0}, status="diverged")
    make_run(tmp_path / "x", ["arm=dragan", "seed=1"], [node], {"mnist_is": 3.0}, status="failed")
    counted = verdict(node, report.find_runs([tmp_path / "x"])).numbers
    assert counted.endswith("entered so far: dragan 1, vanilla 0"), counted  # diverged enters, failed does not


def test_runs_per_arm_of_a_wins_claim_and_of_a_claim_naming_no_arm(tmp_path):
    node = claim(wins={"metric": "mnist_is", "arm": "dragan", "over": ["vanilla"], "per": "arch.seed",
                       "share": 0.5}, runs_per_arm=20)
    # 2 of BogoNet's 20 instances, both won: the check alone says reproduced
    runs = _instances(tmp_path / "a", {0: {"dragan": [5], "vanilla": [4]}, 1: {"dragan": [3], "vanilla": [2]}}, node)
    v = verdict(node, runs)
    assert v.status == "not enough data" and "dragan beats vanilla on 2 of 2 instances" in v.numbers
    assert v.numbers.endswith("the protocol has 20 runs per arm, entered so far: dragan 2, vanilla 2")
    every = claim(at_most={"metric": "modes", "value": 100}, runs_per_arm=3)   # names no arm: all its runs
    some = sweep(tmp_path / "b", {"vanilla": [4, 5]}, [every])
    assert verdict(every, some).numbers.endswith("entered so far: all runs 2")
    assert verdict(every, some).status == "not enough data"
    assert verdict(every, sweep(tmp_path / "c", {"vanilla": [4, 5], "dragan": [6]}, [every])).status == "reproduced"
    best = claim(at_least={"metric": "modes", "arm": "best", "value": 1}, runs_per_arm=2)   # best names none
    assert verdict(best, sweep(tmp_path / "d", {"vanilla": [4]}, [best])).numbers.endswith("all runs 1")


# ---------------------------------------------------------------------------------------------
# the form: malformed claims are one line naming the key


@pytest.mark.parametrize("node, key", [
    ({"id": "x", "statement": "s", "source": "p"}, "claims[0] (x): needs exactly one check"),
    ({"id": "x", "statement": "s", "source": "p", "beter": {}}, "claims[0].beter: unknown key; did you mean 'better'?"),
    ({"statement": "s", "source": "p", "better": {}}, "claims[0].id: required"),
    ({"id": "x", "statement": "s", "source": "p", "better": {"metric": "m", "arm": "a", "than": "b"}},
     "claims[0] (x).better.by: required"),
    ({"id": "x", "statement": "s", "source": "p", "better": {"metric": "m", "arm": "a", "than": "b", "by": "sd"}},
     "claims[0] (x).better.by: unknown option 'sd'; allowed: se, mean"),
    ({"id": "x", "statement": "s", "source": "p", "value": "last",
      "at_least": {"metric": "m", "value": 1}}, "claims[0] (x).value: unknown option 'last'"),
    ({"id": "x", "statement": "s", "source": "p", "at_least": {"metric": "m", "value": "high"}},
     "claims[0] (x).at_least.value: must be a number"),
    ({"id": "x", "statement": "s", "source": "p",
      "events": {"metric": "m", "kind": "spike", "size": 1, "arm": "a", "in_at_least": 1}},
     "events.kind: unknown option 'spike'"),
    ({"id": "x", "statement": "s", "source": "p", "order": {"metric": "m", "arms": ["a"], "by": "mean"}},
     "order.arms: a list of 2 or more"),
    ({"id": "x", "statement": "s", "source": "p", "runs_per_arm": 0, "at_least": {"metric": "m", "value": 1}},
     "claims[0] (x).runs_per_arm: must be a whole number >= 1"),
    ({"id": "x", "statement": "s", "source": "p", "runs_per_arm": "3", "at_least": {"metric": "m", "value": 1}},
     "claims[0] (x).runs_per_arm: must be a whole number >= 1"),
    ({"id": "x", "statement": "s", "source": "p", "runs_per_arm": True, "at_least": {"metric": "m", "value": 1}},
     "claims[0] (x).runs_per_arm: must be a whole number >= 1"),
])
def test_malformed_claims_name_the_key(node, key):
    with pytest.raises(ConfigError) as err:
        claims.parse_all([node])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_duplicate_ids_are_refused():
    node = claim(at_least={"metric": "modes", "value": 1})
    with pytest.raises(ConfigError, match="id 'c' given twice"):
        claims.parse_all([node, node])


# ---------------------------------------------------------------------------------------------
# the report: text and markdown, the budget check, a malformed list, two lists


def test_report_prints_and_writes_the_verdicts(tmp_path, capsys):
    fails = claim(better={"metric": "modes", "arm": "vanilla", "than": "dragan", "by": "se"})
    nodes = [BETTER_SE, {**fails, "id": "vanilla_wins"}, {**claim(at_least={"metric": "hq_pct", "arm": "best",
                                                                             "value": 80}), "id": "hq"}]
    root = tmp_path / "sweep"
    sweep(root, {"dragan": [10, 12, 14], "vanilla": [4, 5, 6]}, nodes)
    assert report_cli.main([str(root), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "claims of experiment=toy (6 runs): 1 reproduced, 1 not reproduced, 1 not enough data" in out
    assert "claim c (Paper §1, Table 1): reproduced: modes (final, mean ± SE over runs; higher is better): " \
           "dragan 12 ± 1.2 (n=3) vs vanilla 5 ± 0.58 (n=3)" in out
    assert "claim vanilla_wins (Paper §1, Table 1): not reproduced:" in out
    assert "claim hq (Paper §1, Table 1): not enough data:" in out
    assert "  the paper: the paper's words" in out
    md = (root / "report.md").read_text()
    assert "## Claims of experiment=toy" in md
    assert "| vanilla_wins | Paper §1, Table 1 | the paper's words | **not reproduced** |" in md
    assert md.index("## Claims") < md.index("## modes")   # next to the summary, before the per-metric tables


def test_toy_report_prints_the_budget_check_beside_the_claims(tmp_path, capsys):
    root = tmp_path / "sweep"
    for arm, finals in {"dragan": [10, 12], "vanilla": [4, 6]}.items():
        for seed, final in enumerate(finals):
            curve = [{"step": 50, "modes": final / 2, "hq_pct": 40.0}, {"step": 100, "modes": final, "hq_pct": 85.0}]
            make_run(root, ["experiment=toy", f"arm={arm}", "dataset=ring8", f"seed={seed}"], [BETTER_SE],
                     {"modes": final, "hq_pct": 85.0}, curve=curve)
    assert report_cli.main([str(root), "--no-figures"]) == 0
    out = capsys.readouterr().out
    claims_at = out.index("claims of experiment=toy")
    assert out.index("budget check: step 50 fails the doubling test to step 100", claims_at) > claims_at
    # dragan: (5 + 6)/2 = 5.5 at step 50, (10 + 12)/2 = 11 at 100, s = √2, SE = s/√2 = 1; vanilla likewise
    assert "ring8 arm=dragan 5.5 -> 11.0 (SE 1.0); ring8 arm=vanilla 2.5 -> 5.0 (SE 1.0)" in out
    # --table toy: the claims follow its own budget check, which is not repeated
    assert report_cli.main([str(root), "--table", "toy"]) == 0
    out = capsys.readouterr().out
    assert out.count("budget check:") == 1 and "claim c (Paper §1, Table 1): reproduced" in out
    assert "## Claims of experiment=toy" in (root / "toy_table.md").read_text()


def test_a_malformed_claim_fails_the_report_in_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "sweep"
    sweep(root, {"dragan": [1, 2], "vanilla": [3, 4]}, [claim(better={"metric": "modes", "arm": "dragan"})])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert report_cli.main([str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganbench-report: error: ") and "claims[0] (c).better.than: required" in err
    assert "\n" not in err and "Traceback" not in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_runs_with_two_claims_lists_are_warned_about_and_checked_apart(tmp_path, capsys):
    other = {**BETTER_SE, "id": "other"}
    sweep(tmp_path / "a", {"dragan": [10, 12, 14], "vanilla": [4, 5, 6]}, [BETTER_SE])
    sweep(tmp_path / "b", {"dragan": [10, 12, 14], "vanilla": [4, 5, 6]}, [other])
    text, md = claims.section(report.find_runs([tmp_path]))
    assert text[0].startswith("warning: the runs carry 2 different claims lists")
    assert sum(line.startswith("claims of experiment=toy (6 runs)") for line in text) == 2
    assert any(line.startswith("claim other (") for line in text) and any(line.startswith("claim c (") for line in text)


def test_a_run_recorded_before_its_preset_had_claims_joins_its_experiments_list(tmp_path):
    """The first arm of a long sweep started before the preset stated claims: its config has none, yet it is
    a run of the same experiment and is checked with the other arm (not left out as 'no run')."""
    sweep(tmp_path, {"dragan": [10, 12, 14]}, [BETTER_SE])
    sweep(tmp_path, {"vanilla": [4, 5, 6]}, None)
    sweep(tmp_path / "other", {"vanilla": [1, 1, 1]}, None, extra=["experiment=another"])
    text, _ = claims.section(report.find_runs([tmp_path]))
    assert text[0].startswith("claims of experiment=toy (6 runs): 1 reproduced"), text


def test_claims_flag_checks_the_presets_list_as_it_stands_now(tmp_path, capsys):
    """Runs carry the claims list of the day they started; ``--claims PRESET`` checks the preset's current
    list (toy_veegan: runs_per_arm 5) over all of them, in one section."""
    old = [claim(better={"metric": "modes", "arm": "unrolled", "than": "vanilla", "by": "se"})]
    root = tmp_path / "sweep"
    # 3 of VEEGAN's 5 runs per arm, unrolled far ahead: the old list says reproduced
    sweep(root, {"unrolled": [20, 21, 22], "vanilla": [5, 6, 7]}, old, extra=["dataset=grid25"])
    assert report_cli.main([str(root), "--no-figures"]) == 0
    assert "claim c (Paper §1, Table 1): reproduced" in capsys.readouterr().out
    assert report_cli.main([str(root), "--no-figures", "--claims", "toy_veegan"]) == 0
    out = capsys.readouterr().out
    assert "claims of experiment=toy_veegan (its claims as conf/ states them now: --claims) (6 runs): " \
           "0 reproduced, 0 not reproduced, 2 not enough data" in out
    assert "claim unrolled_more_modes_grid25 (VEEGAN" in out and "claim c " not in out
    assert "the protocol has 5 runs per arm, entered so far: unrolled 3, vanilla 3" in out
    for seed in (3, 4):   # the protocol's 5 runs per arm: the check's own verdict
        for arm, value in (("unrolled", 20), ("vanilla", 6)):
            make_run(root, ["experiment=toy", f"arm={arm}", "dataset=grid25", f"seed={seed}"], old, {"modes": value})
    assert report_cli.main([str(root), "--no-figures", "--claims", "toy_veegan", "--table", "toy"]) == 0
    out = capsys.readouterr().out
    assert "claim unrolled_more_modes_grid25 (VEEGAN" in out and ": reproduced: modes" in out
    assert "(10 runs): 1 reproduced, 0 not reproduced, 1 not enough data" in out   # no hq_pct recorded here
    assert "toy_veegan" in (root / "toy_table.md").read_text()


@pytest.mark.parametrize("preset, message", [
    ("toy_vegan", "ganbench-report: error: --claims toy_vegan: unknown preset; did you mean 'toy_veegan'? presets: "),
    ("quickstart", "ganbench-report: error: --claims quickstart: the preset states no claims; name a comparison "
                   "preset (docs/presets.md)\n"),
])
def test_claims_flag_with_an_unknown_preset_or_one_without_claims_is_one_line(tmp_path, capsys, preset, message):
    root = tmp_path / "sweep"
    sweep(root, {"unrolled": [20], "vanilla": [5]}, [BETTER_SE])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert report_cli.main([str(root), "--claims", preset]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before    # nothing written


def test_no_claims_no_section(tmp_path):
    run = tmp_path / "r"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (run / "results.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
    assert claims.section(report.find_runs([tmp_path])) == ([], [])


# ---------------------------------------------------------------------------------------------
# the comparison presets

COMPARISON_PRESETS = ("toy_mode_collapse", "toy_mode_collapse_converged", "toy_veegan", "toy_pacgan", "toy_unrolled",
                      "mnist_one_hidden_layer", "bogonet", "bogonet_mnist_mlp", "fgan_stability", "fgan_stability_mnist", "gmm_heatmap", "gmm_trajectory",
                      "dragan_vs_wgangp_cifar10", "hard_dcgan_variants", "stacked_mnist")
# The GMM lab's metrics (README, "Outputs"): <method>_<name> per method, and the discriminator-only count.
GMM_NAMES = {"heatmap": ("success", "mode_collapse", "disc_collapse", "vanishing_grad", "final_tv"),
             "trajectory": ("final_tv", "mode_gap", "collapsed_intervals", "first_collapse_step")}


def _compose(preset):
    from hydra import compose, initialize_config_dir

    import ganbench.cli as cli

    with initialize_config_dir(cli.config_dir(), version_base="1.3"):
        return compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)


def _swept(cfg, resolve=False):
    """{key: its sweep values} of the preset's hydra.sweeper.params (a range: None, any value; with ``resolve``
    its values, range(a,b) -> a..b-1)."""
    from omegaconf import OmegaConf

    node = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=resolve) if node else {}
    out = {}
    for k, v in params.items():
        text = str(v)
        if text.startswith("range("):
            out[k] = [str(i) for i in range(*map(int, text[6:-1].split(",")))] if resolve else None
        else:
            out[k] = [x.strip() for x in text.split(",")]
    return out


@pytest.mark.parametrize("preset", COMPARISON_PRESETS)
def test_every_comparison_preset_states_well_formed_claims(preset):
    from omegaconf import OmegaConf

    from ganbench.metric_catalog import METRIC_GROUPS, produced_metrics

    cfg = _compose(preset)
    parsed = claims.parse_all(OmegaConf.to_container(cfg.claims, resolve=True))
    assert parsed, preset
    if cfg.task == "gmm":
        known = {f"{m}_{n}" for m in cfg.gmm.methods for n in GMM_NAMES[cfg.gmm.mode]} | {"d_only_collapsed_intervals"}
        produced = known
    else:
        known = {n for names in METRIC_GROUPS.values() for n in names}
        produced = set(produced_metrics(cfg))
    swept = _swept(cfg)
    for c in parsed:
        assert c.statement and c.source, c.id
        metrics = [c.spec[k] for k in ("metric",) if k in c.spec] + list(c.spec.get("metrics") or [])
        for metric in metrics:
            alternatives = [metric] if isinstance(metric, str) else list(metric)
            assert all(m in known for m in alternatives), (preset, c.id, alternatives)
            # one alternative is a metric the preset as shipped records (the check reads the first one reported:
            # is_mean on CIFAR-10, mnist_is in the MNIST presets that inherit the same claims)
            assert any(m in produced for m in alternatives), (preset, c.id, alternatives, sorted(produced))
        arms = c.arms()
        if arms:   # every arm it names is one the sweep runs, under the key the claim reads
            assert swept.get(c.arm_key), (preset, c.id, c.arm_key)
            assert set(arms) <= set(swept[c.arm_key]), (preset, c.id, arms, swept[c.arm_key])
        for key, value in c.where.items():
            assert key in swept and value in swept[key], (preset, c.id, key, value)
        if "per" in c.spec:
            assert c.spec["per"] in swept, (preset, c.id)
        if cfg.task != "gmm":   # a GMM-lab run holds every method: one run, no arms
            # the protocol's count, as the shipped sweep runs it: every swept key other than the arm key and
            # the claim's where, times the seeds trained together (train.replicas)
            per_arm = int(cfg.train.replicas)
            for key, values in _swept(cfg, resolve=True).items():
                if key != c.arm_key and key not in c.where:
                    per_arm *= len(values)
            assert c.runs_per_arm == per_arm, (preset, c.id, c.runs_per_arm, per_arm)


def test_a_gmm_run_logs_its_claims_verdicts(tmp_path, caplog):
    import logging

    from conftest import compose

    from ganbench.gmm import run

    cfg = compose(["experiment=gmm_heatmap", "gmm.grid=3", "gmm.inits=4", "gmm.iterations=50", "gmm.backend=torch",
                   "gmm.compile=false"])
    with caplog.at_level(logging.INFO, logger="ganbench.gmm"):
        run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [c["id"] for c in saved["config"]["claims"]][0] == "unrolled_between_first_order_and_optimal"
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("claims of experiment=") and "(1 run)" in line for line in lines)
    verdicts = [line for line in lines if line.startswith("claim unrolled_between_first_order_and_optimal (Li et al.")]
    assert len(verdicts) == 1
    m = saved["metrics"]
    ordered = m["first_order_success"]["final"] < m["unrolled_success"]["final"] < m["optimal_success"]["final"]
    assert (": reproduced:" in verdicts[0]) == ordered and (": not reproduced:" in verdicts[0]) != ordered


def test_a_malformed_claim_stops_a_run_before_it_starts(tmp_path):
    """config.validate_top parses the claims: a typo in a preset's list fails the start in one line naming the
    key, not the report hours later."""

    from conftest import FAST, POINTS, compose, ganbench_run

    from ganbench.config import validate_top

    bad = "claims=[{id: x, statement: s, source: p, better: {metric: modes, arm: dragan, than: vanilla, by: sd}}]"
    with pytest.raises(ConfigError, match=r"^claims\[0\] \(x\)\.better\.by: unknown option 'sd'; allowed: se, mean$"):
        validate_top(compose(["experiment=gmm_heatmap", bad]))
    validate_top(compose(["experiment=gmm_heatmap"]))   # the shipped list passes
    run_dir = tmp_path / "run"
    out = ganbench_run([*POINTS, *FAST, "train.iterations=5", "+" + bad, f"hydra.run.dir={run_dir}"], run_dir.parent,
                       timeout=300)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert lines[0].startswith("ganbench: error: claims[0] (x).better.by: unknown option 'sd'")
    assert not (run_dir / ".hydra").exists() and not (run_dir / "metrics.jsonl").exists()   # it never started


def test_bogonet_table_prints_the_claims(tmp_path, capsys):
    node = claim(wins={"metric": ["is_mean", "mnist_is"], "arm": "dragan", "over": ["vanilla"], "per": "arch.seed",
                       "share": 0.5})
    root = tmp_path / "sweep"
    for instance, (dragan, vanilla) in enumerate([(5.0, 4.0), (3.0, 6.0), (7.0, 2.0)]):   # dragan wins 2 of 3
        for arm, score in (("dragan", dragan), ("vanilla", vanilla)):
            make_run(root, ["experiment=bogonet", f"arch.seed={instance}", f"arm={arm}", "seed=0"], [node],
                     {"mnist_is": score}, curve=[{"step": 50, "mnist_is": 1.0}, {"step": 100, "mnist_is": score}])
    assert report_cli.main([str(root), "--table", "bogonet"]) == 0
    out = capsys.readouterr().out
    assert "claim c (Paper §1, Table 1): reproduced: mnist_is (final, mean over an instance's seeds): dragan beats " \
           "vanilla on 2 of 3 instances (arch.seed) with every arm; claim: a share >= 0.5" in out
    assert "## Claims of experiment=bogonet" in (root / "bogonet_table.md").read_text()


def test_the_searches_do_not_inherit_toy_veegans_claims():
    from conftest import compose

    for preset in ("equal_budget_toy", "tune_dragan_grid25", "tune_wgan_gp_grid25"):
        assert list(compose([f"experiment={preset}"]).claims) == [], preset
    assert len(compose(["experiment=toy_veegan"]).claims) == 2
