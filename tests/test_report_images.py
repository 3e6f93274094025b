"""ganbench-report on image runs: the runs' sample grids in report.md, no table or figure of metrics that are
null in every run (a CIFAR-like sweep without the Inception weights), no bookkeeping field as a metric."""

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import run_train
from ganbench.report import cli as report_cli, tables as report
from ganbench.metric_catalog import BOOKKEEPING

IMAGE_METRICS = ("fid", "is_mean", "is_std", "kid_mean", "kid_std")   # metrics.names=auto on an image folder
LINK = re.compile(r"!\[((?:\\.|[^\]\\])*)\]\(([^)]+)\)")


@pytest.fixture(scope="module")
def image_sweep(tmp_path_factory, image_folder, data_cache):
    """2 arms × 2 seeds of a tiny DCGAN, 4 steps, evaluated at steps 2 and 4 with IS/FID/KID but no Inception
    weights (an absent metrics.inception_weights: null with its reason, as offline without the download)."""
    root = tmp_path_factory.mktemp("image_sweep") / "sweep"
    absent = root.parent / "absent-inception.pth"
    base = ["train.progress=false", "threads=1", "device=cpu", "dataset=folder", f"dataset.path={image_folder}",
            "dataset.resolution=16", f"dataset.root={data_cache}", "dataset.decode_workers=1", "arch=dcgan",
            "arch.width=4", "arch.z_dim=8", "train.batch_size=8", "train.sample_grid=4", "train.iterations=4",
            "eval.every=2", "train.log_every=2", "metrics.names=auto", f"metrics.inception_weights={absent}"]
    for objective in ("vanilla", "hinge"):
        for seed in (0, 1):
            rec = run_train(root / f"objective={objective}" / f"seed={seed}",
                            base + [f"objective={objective}", f"seed={seed}"], fast=False)
            assert rec["status"] == "completed", rec
            assert all(rec["metrics"][m]["final"] is None for m in IMAGE_METRICS), rec["metrics"]
    return root


def links(md: str):
    """(alt text, target) of every image in a markdown text."""
    return [(re.sub(r"\\(.)", r"\1", alt), target) for alt, target in LINK.findall(md)]


def test_an_image_sweep_without_inception_weights_reports_its_sample_grids(image_sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_cli.main([str(image_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    runs = report.find_runs([image_sweep])
    assert len(runs) == 4 and all((r.path / "samples.png").is_file() for r in runs)
    reason = runs[0].null_reason("fid")
    assert "absent-inception.pth" in reason and "does not exist" in reason

    # The metrics null in every run: one line, naming each, with the reason once.
    null_lines = [x for x in md.splitlines() if reason in x]
    assert null_lines == [f"- null in every run, not tabulated or plotted: {', '.join(IMAGE_METRICS)}: {reason}"]
    assert printed.count(reason) == 1
    for name in IMAGE_METRICS + BOOKKEEPING:
        assert f"## {name}" not in md and f" {name} final" not in md and f" {name} final" not in printed
    assert "eval_samples" not in md and "eval_samples" not in (out / "report.csv").read_text()

    # No figure of a null metric or of bookkeeping: only the gradient-norm figure of each group, if any.
    figures = sorted(p.name for p in (out / "figures").glob("*")) if (out / "figures").exists() else []
    assert all(name.startswith("grad_norm_") for name in figures), figures
    assert not any(name.startswith(IMAGE_METRICS + BOOKKEEPING) for name in figures)

    # Every linked file exists; each run's grid is linked once, a copy of its samples.png, in its arm's row.
    shown = links(md)
    assert all((out / target).is_file() for _, target in shown)
    grids = {alt: target for alt, target in shown if target.startswith("sample_grids/")}
    assert sorted(grids) == ["objective=hinge seed=0", "objective=hinge seed=1",
                             "objective=vanilla seed=0", "objective=vanilla seed=1"]
    for r in runs:
        copy = out / grids[f"objective={r.overrides['objective']} seed={r.seed}"]
        assert copy.read_bytes() == (r.path / "samples.png").read_bytes()
    section = md.split("## Samples", 1)[1].split("\n## ", 1)[0]
    table = [x for x in section.splitlines() if x.startswith("|")]
    assert table[0] == "| group | seed=0 | seed=1 |"
    for arm, row in zip(("hinge", "vanilla"), table[2:]):
        assert row.startswith(f"| objective={arm} | ")
        assert [alt for alt, _ in links(row)] == [f"objective={arm} seed=0", f"objective={arm} seed=1"]
    assert len(table) == 4
    assert f"4 sample grids in {out / 'sample_grids'}" in printed


def grid_run(root, overrides, png=True, status="completed"):
    """A run dir with a results.json and, with ``png``, a samples.png holding its own path (to tell copies apart)."""
    name = ",".join(o for o in overrides if not o.startswith("seed=")) or "all"
    seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), None)
    run = root / name / (f"seed={seed}" if seed is not None else "run")
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (run / "results.json").write_text(json.dumps({"status": status, "step": 10, "iterations": 10, "metrics": {}}))
    if png:
        (run / "samples.png").write_bytes(b"\x89PNG fake grid of " + str(run).encode())
    return run


def test_runs_without_a_grid_are_said_so_and_a_sweep_without_grids_has_no_section(tmp_path, capsys):
    root = tmp_path / "s"
    grid_run(root, ["objective=a", "seed=0"])
    grid_run(root, ["objective=a", "seed=1"], png=False, status="diverged")
    grid_run(root, ["objective=b", "seed=1"])
    assert report_cli.main([str(root), "--no-figures"]) == 0
    md = (root / "report.md").read_text()
    table = [x for x in md.split("## Samples", 1)[1].split("\n## ", 1)[0].splitlines() if x.startswith("|")]
    assert table[0] == "| group | seed=0 | seed=1 |"
    assert table[2] == "| objective=a | ![objective=a seed=0](sample_grids/01.01_objective=a_seed=0.png) | " \
                       "no samples.png (diverged) |"
    assert table[3] == "| objective=b | – | ![objective=b seed=1](sample_grids/02.01_objective=b_seed=1.png) |"
    assert all((root / target).is_file() for _, target in links(md))
    # --no-figures still copies the grids (they are the runs' output, not the report's figures).
    assert sorted(p.name for p in (root / "sample_grids").iterdir()) == \
        ["01.01_objective=a_seed=0.png", "02.01_objective=b_seed=1.png"]

    points = tmp_path / "points"
    grid_run(points, ["objective=a", "seed=0"], png=False)
    capsys.readouterr()
    assert report_cli.main([str(points)]) == 0
    assert "## Samples" not in (points / "report.md").read_text()
    assert not (points / "sample_grids").exists() and "sample grids" not in capsys.readouterr().out


def test_a_group_with_several_runs_of_one_seed_gets_a_column_per_run(tmp_path):
    """--by objective puts two runs of seed 0 (two learning rates) in one group: a column per run, each cell
    naming its seed and folder; brackets of a label are escaped in the alt text."""
    root = tmp_path / "s"
    grid_run(root, ["objective=a", "optimizer.lr=0.1", "seed=0"])
    grid_run(root, ["objective=a", "optimizer.lr=0.2", "seed=0"])
    grid_run(root, ["objective=[x]", "optimizer.lr=0.1", "seed=0"])
    out = tmp_path / "o"
    assert report_cli.main([str(root), "--by", "objective", "--out", str(out), "--no-figures"]) == 0
    md = (out / "report.md").read_text()
    table = [x for x in md.split("## Samples", 1)[1].split("\n## ", 1)[0].splitlines() if x.startswith("|")]
    assert table[0] == "| group | run 1 | run 2 |"
    shown = links(md)
    assert [alt for alt, _ in shown] == ["objective=[x] seed=0", "objective=a seed=0", "objective=a seed=0"]
    assert r"![objective=\[x\] seed=0]" in table[2] and table[2].endswith("|  |")
    assert "seed=0 optimizer.lr=0.1<br>![objective=a seed=0]" in table[3]
    assert "seed=0 optimizer.lr=0.2<br>![objective=a seed=0]" in table[3]
    copies = [(out / target).read_bytes() for _, target in shown]
    assert len(set(copies)) == 3 and all(b"optimizer.lr=" in c for c in copies)
