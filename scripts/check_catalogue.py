"""Run every method of the survey's catalogue through the installed ``ganbench`` once: each objective on
ring8 (200 steps, MLP) and on a CIFAR-10 image archive (3 steps, DCGAN, batch 16), and each penalty and
training scheme with objective=vanilla. Prints one line per run with its results.json status.

    python scripts/check_catalogue.py --cifar ../shared/data/cifar10-jpeg.tar.gz --out /tmp/catalogue
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OBJECTIVES = ["fgan_kl", "fgan_reverse_kl", "fgan_pearson", "fgan_hellinger", "fgan_js", "fgan_gan", "fgan_tv",
              "ebgan", "lsgan_qi", "mdgan", "mixgan", "feature_matching", "sngan"]
SCHEMES = {  # penalties and training schemes, each with objective=vanilla
    "roth": ["penalty=roth"],
    "consensus": ["penalty=consensus", "dynamics=simultaneous"],
    "nk": ["penalty=nk"],
    "historical": ["penalty=historical"],
    "simultaneous": ["dynamics=simultaneous"],
    "unrolled": ["dynamics=unrolled"],
    "instance_noise": ["dynamics.instance_noise=0.1", "dynamics.noise_anneal=true"],
    "label_smoothing": ["objective.real_label=0.9"],
    "minibatch_discrimination": ["arch.minibatch_discrimination=100"],
    "lr_decay": ["train.lr_decay=linear"],
    "spectral_norm": ["arch.g.spectral_norm=true", "arch.d.spectral_norm=true"],
}
VBN = {"virtual_batch_norm": ["arch.g_norm=virtual_batch"]}  # DCGAN only
SNGAN = {"sngan_cnn": ["objective=sngan", "arch=sngan"],  # the SNGAN networks (images only), their own arch
         "sngan_resnet": ["objective=sngan", "arch=sngan_resnet"]}


def run(name: str, args: list[str], out: Path) -> tuple[str, str, float]:
    run_dir = out / name
    t = time.perf_counter()
    exe = Path(sys.executable).parent / "ganbench"  # the environment's own console script
    proc = subprocess.run([str(exe) if exe.exists() else (shutil.which("ganbench") or "ganbench"), *args, "train.progress=false", "threads=1",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True)
    try:
        status = json.loads((run_dir / "results.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        status = "no results.json"
    if proc.returncode != 0:
        status += f" (exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''})"
    return name, status, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar", type=Path, help="CIFAR-10 image archive for the image runs (skipped without)")
    ap.add_argument("--out", type=Path, default=Path("outputs/catalogue"))
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    points = ["dataset=ring8", "arch=mlp", "train.iterations=200"]
    jobs = [(f"ring8/{o}", points + [f"objective={o}"]) for o in OBJECTIVES]
    jobs += [(f"ring8/{k}", points + ["objective=vanilla", *v]) for k, v in SCHEMES.items()]
    if a.cifar:
        images = ["dataset=folder", f"dataset.path={a.cifar.resolve()}", "arch=dcgan", "train.iterations=3",
                  "train.batch_size=16"]
        jobs += [(f"cifar/{o}", images + [f"objective={o}"]) for o in OBJECTIVES]
        jobs += [(f"cifar/{k}", images + ["objective=vanilla", *v]) for k, v in {**SCHEMES, **VBN}.items()]
        jobs += [(f"cifar/{k}", [o for o in images if o != "arch=dcgan"] + v) for k, v in SNGAN.items()]
    failed = 0
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for name, status, secs in pool.map(lambda job: run(job[0], job[1], a.out), jobs):
            failed += status != "completed"
            print(f"{name:<36} {status:<12} {secs:6.1f} s", flush=True)
    print(f"{len(jobs) - failed}/{len(jobs)} completed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
