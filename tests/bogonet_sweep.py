"""A constructed BogoNet sweep for the report tests: run directories in the layout the runner writes
(.hydra/overrides.yaml, results.json, metrics.jsonl), algorithms × instances (``arch.seed``), with scores
chosen so that every number of the BogoNet table can be worked out by hand."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

# Final mnist_is per instance 0..5. The curve is [1, MID, final] at generator steps 1000, 2000, 3000.
FINALS = {"vanilla": [3.0, 2.0, 5.0, 1.0, 2.0, 2.0], "dragan": [4.0, 3.0, 4.0, 2.0, 6.0, 2.0]}
MIDS = {"vanilla": [2.0] * 6, "dragan": [2.0, 2.0, 2.0, 2.0, 2.0, 0.0]}
# Wall-clock seconds of the three evaluations: dragan's steps take twice as long.
TIMES = {"vanilla": [60.0, 120.0, 180.0], "dragan": [120.0, 240.0, 360.0]}
STEPS = [1000, 2000, 3000]
# A third algorithm, on instances 0..3 only (4 and 5 not run): always 1.5.
WGAN_INSTANCES = [0, 1, 2, 3]


def make_run(root: Path, overrides, curve, status="completed", metric="mnist_is"):
    name = ",".join(o for o in overrides if not o.startswith("seed="))
    seed = next(o for o in overrides if o.startswith("seed=")).split("=")[1]
    run = root / name / f"seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    final = curve[-1][metric]
    best = max(row[metric] for row in curve)
    body = {"status": status, "step": curve[-1]["step"], "iterations": 3000, "wall_time_s": curve[-1]["wall_time_s"],
            "metrics": {metric: {"final": final, "final_step": curve[-1]["step"], "best": best,
                                 "higher_is_better": True, "reason": None}}}
    (run / "results.json").write_text(json.dumps(body))
    return run


def build(root: Path, with_wgan: bool = True) -> Path:
    for alg in ("vanilla", "dragan"):
        for inst in range(6):
            values = [1.0, MIDS[alg][inst], FINALS[alg][inst]]
            curve = [{"step": s, "images_seen": s * 64, "wall_time_s": t, "mnist_is": v}
                     for s, t, v in zip(STEPS, TIMES[alg], values)]
            make_run(root, ["experiment=bogonet", f"objective={alg}", f"arch.seed={inst}", "seed=0"], curve)
    if with_wgan:
        for inst in WGAN_INSTANCES:
            curve = [{"step": s, "images_seen": s * 64, "wall_time_s": t, "mnist_is": 1.5}
                     for s, t in zip(STEPS, TIMES["vanilla"])]
            make_run(root, ["experiment=bogonet", "objective=wgan_gp", f"arch.seed={inst}", "seed=0"], curve)
    return root
