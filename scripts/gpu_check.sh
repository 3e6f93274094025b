#!/usr/bin/env bash
# The GPU path's check, for the day a GPU is lent: one script, no network, <= 8 minutes on one H100.
#
#   bash scripts/gpu_check.sh                  # on a machine with CUDA: writes gpu_check/ (JSON + markdown)
#   bash scripts/gpu_check.sh --cpu-dry-run    # here: every part on the CPU at toy sizes (the plumbing only)
#   OUT=/some/dir bash scripts/gpu_check.sh    # another output folder
#
# It runs, in order, each with its own time limit so that one slow part cannot take the others' time:
#   1. the CUDA-only tests (tests/ -k cuda; on the CPU they skip, which the dry run reports);
#   2. the DCGAN 32x32 generator iteration (vanilla, DRAGAN, WGAN-GP) per numeric mode (fp32, TF32, bf16,
#      train.compile, compile + bf16, compile + CUDA graphs) against its FLOP floor (scripts/bench.py gpu);
#   3. toy replicas at N = 1, 8, 64, 256 against N separate runs (scripts/bench.py replicas);
#   4. a toy comparison at its converged budget with its table and claims: toy_mode_collapse_converged's ring8
#      DRAGAN and WGAN-GP arms, 32,000 steps x 10 trials each (DRAGAN Figure 13's claim that both cover the
#      8 modes), then ganbench-report --table toy. The limit stops it where it is: the table then reads the
#      runs at their last evaluation, and rerunning the script continues them (exact resume).
# Limits: 60 + 160 + 45 + 170 + 25 s = 7 min 40 s at most.
# The CIFAR-10 archive is not needed: part 2 draws random images (a step's cost does not depend on them).
# Results: $OUT/gpu_check.json and $OUT/gpu_check.md (the README's performance section takes the table).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
DRY=0
[ "${1:-}" = "--cpu-dry-run" ] && DRY=1
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
status=0
run() {  # run NAME LIMIT_S CMD...: one part, its log in $OUT/NAME.log, its exit status recorded
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$OUT/$name.rc"
  tail -n 3 "$OUT/$name.log"
  [ "$rc" = 0 ] || status=1
}

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  run tests 300 "$PY" -m pytest -q -p no:cacheprovider -m "not slow and not slurm" -k cuda tests/test_gpu_path.py \
    tests/test_host_sync.py tests/test_replicas.py -rs
  run steps 300 "$PY" scripts/bench.py gpu --device cpu --width 8 --modes fp32 bf16 --objective vanilla dragan \
    --steps 2 --repeats 1 --warmup 1 --json "$OUT/steps.json"
  run replicas 300 "$PY" scripts/bench.py replicas --device cpu --n 1 8 --steps 20 --repeats 2 --json "$OUT/replicas.json"
  TOY=(train.iterations=40 eval.every=20 train.replicas=2)
else
  DEVICE=cuda
  run tests 60 "$PY" -m pytest -q -p no:cacheprovider -m "not slurm" -k cuda tests/ -rs
  run steps 160 "$PY" scripts/bench.py gpu --device cuda --json "$OUT/steps.json"
  run replicas 45 "$PY" scripts/bench.py replicas --device cuda --n 1 8 64 256 --json "$OUT/replicas.json"
  TOY=()
fi
run toy 170 ganbench -m experiment=toy_mode_collapse_converged arm=dragan,wgan_gp dataset=ring8 \
  device=$DEVICE hydra/launcher=basic "hydra.sweep.dir=$OUT/toy" "${TOY[@]}"
run toy_table 25 ganbench-report "$OUT/toy" --table toy --out "$OUT/toy_report"

"$PY" - "$OUT" "$DRY" <<'EOF'
"""Collect the parts into gpu_check.json and gpu_check.md."""
import json
import sys
from pathlib import Path

out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
parts = {}
for name in ("tests", "steps", "replicas", "toy", "toy_table"):
    rc = (out / f"{name}.rc").read_text().strip() if (out / f"{name}.rc").exists() else "not run"
    parts[name] = {"exit": rc, "log_tail": (out / f"{name}.log").read_text()[-2000:] if (out / f"{name}.log").exists()
                   else ""}
steps = json.loads((out / "steps.json").read_text()) if (out / "steps.json").exists() else None
replicas = json.loads((out / "replicas.json").read_text()) if (out / "replicas.json").exists() else None
report = {"dry_run": dry, "parts": parts, "steps": steps, "replicas": replicas}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
lines = [f"# GPU check{' (CPU dry run: plumbing only, no figure to quote)' if dry else ''}", ""]
machine = (steps or replicas or {}).get("machine", {})
lines += [f"PyTorch {machine.get('torch')}, {machine.get('gpu') or machine.get('cpu')}", ""]
lines += ["| part | exit |", "|---|---|"] + [f"| {k} | {v['exit']} |" for k, v in parts.items()] + [""]
if steps:
    lines += ["## DCGAN 32x32 iteration against its FLOP floor", "",
              "| objective | mode | ms per iteration | GFLOP | floor ms | x floor |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['objective']} | {r['mode']} | {r['ms']:.3f} | {r['gflop']:.2f} | {r['floor_ms']:.3f} | "
              f"{r['x_floor']:.1f} |" for r in steps["cases"]] + [""]
if replicas:
    lines += ["## Toy replicas against separate runs", "", f"one run: {replicas['single_step_ms']:.3f} ms per step", "",
              "| replicas | ms per step | ms per run-step | speed-up |", "|---|---|---|---|"]
    lines += [f"| {r['replicas']} | {r['step_ms']:.3f} | {r['per_run_ms']:.4f} | {r['speedup_vs_sequential']:.1f}x |"
              for r in replicas["cases"]] + [""]
table = out / "toy_table.log"
if table.exists():
    lines += ["## toy_mode_collapse_converged, ring8, DRAGAN and WGAN-GP", "", "```", table.read_text().strip(), "```", ""]
(out / "gpu_check.md").write_text("\n".join(lines))
print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
EOF
exit $status
