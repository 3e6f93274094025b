"""Peers' training overhead: each peer's own trainer against a bare PyTorch loop of the same network and loss.

    python scripts/bench_peers.py                      # torchgan and torch-mimicry, 20 steps, 3 pairs
    python scripts/bench_peers.py --peers torchgan --steps 30 --pairs 5 --json peers.json

A benchmark, not a dependency: each peer is installed from PyPI (``pip install <peer>``) into a virtual
environment of its own under a temporary folder (``--venv-root`` keeps and reuses them), never into this
project's environment and never into the repository. The environment sees the running interpreter's
site-packages through a ``.pth`` file, so torch is not downloaded again (``--system-site-packages`` would
expose the base interpreter's packages, not this venv's).

For each peer both sides run as whole processes (``python bench_peers.py --child <peer> <side>``), one
untimed run of each first, then ``--pairs`` pairs with the side that goes first alternating; quoted is
the median over pairs of trainer / bare, in wall time and in CPU time (user + sys of the child).

- **torchgan** (0.1.0): ``torchgan.trainer.Trainer`` with its ``DCGANGenerator`` / ``DCGANDiscriminator``
  (32×32, step_channels 64, z 100: the same sizes as ganbench's arch=dcgan), ``MinimaxGeneratorLoss``
  (non-saturating) and ``MinimaxDiscriminatorLoss``, Adam 2e-4 β=(0.5, 0.999), one epoch over a
  DataLoader of ``--steps`` × 64 random images. The bare side iterates the same DataLoader and does what
  the losses' ``train_ops`` do (G step first, then D step, in the trainer's order, with the same
  random draws), without the trainer's per-step ``loss.item()`` calls and gradient-norm logging and without
  its end-of-epoch checkpoint and sample images.
- **torch-mimicry** (0.1.16): installed with its requirements (tensorflow among them, for its metrics);
  it is measured only if ``import torch_mimicry`` works, and otherwise reported as not measurable with the
  error line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

PEERS = {
    # peer: (PyPI name, module imported to check it runs)
    "torchgan": ("torchgan", "torchgan.trainer"),
    "torch-mimicry": ("torch-mimicry", "torch_mimicry"),
}
BATCH, Z_DIM, LR, BETAS = 64, 100, 2e-4, (0.5, 0.999)
ITERATIONS_DONE = "bench_peers: trainer iterations done: "


# ------------------------------------------------------------------------------ children (in the peer's venv)

def child_torchgan(side: str, steps: int, out: Path) -> None:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset
    from torchgan.losses import MinimaxDiscriminatorLoss, MinimaxGeneratorLoss
    from torchgan.models import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    # Labels only because torchgan's Trainer reads data[1] from every list batch; no loss uses them.
    data = TensorDataset(torch.rand(steps * BATCH, 3, 32, 32) * 2 - 1, torch.zeros(steps * BATCH, dtype=torch.long))
    loader = DataLoader(data, batch_size=BATCH, shuffle=True)
    g_args = {"encoding_dims": Z_DIM, "out_size": 32, "out_channels": 3, "step_channels": 64}
    d_args = {"in_size": 32, "in_channels": 3, "step_channels": 64}
    adam = {"lr": LR, "betas": BETAS}
    if side == "trainer":
        from torchgan.trainer import Trainer

        trainer = Trainer(
            {"generator": {"name": DCGANGenerator, "args": g_args, "optimizer": {"name": torch.optim.Adam, "args": adam}},
             "discriminator": {"name": DCGANDiscriminator, "args": d_args,
                               "optimizer": {"name": torch.optim.Adam, "args": adam}}},
            [MinimaxGeneratorLoss(), MinimaxDiscriminatorLoss()], sample_size=64, epochs=1,
            device=torch.device("cpu"), checkpoints=str(out / "model" / "gan"), recon=str(out / "images"))
        # Count the trainer's iterations (one Python call each), so that a run that fails after its last
        # iteration (torchgan 0.1.0 on torchvision >= 0.15, at its end-of-epoch sample grid) says so.
        done, inner = [0], trainer.train_iter

        def train_iter():
            out = inner()
            done[0] += 1
            return out

        trainer.train_iter = train_iter
        try:
            trainer(loader)
        finally:
            print(f"{ITERATIONS_DONE}{done[0]}", file=sys.stderr)
        return
    G, D = DCGANGenerator(**g_args), DCGANDiscriminator(**d_args)
    opt_G, opt_D = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    for real, _ in loader:
        # GeneratorLoss.train_ops: z, G(z), D(G(z)), BCE(D(G(z)), 1), step (D's grads are zeroed below).
        z = torch.randn(BATCH, Z_DIM)
        opt_G.zero_grad()
        dgz = D(G(z))
        g_loss = F.binary_cross_entropy_with_logits(dgz, torch.ones_like(dgz))
        g_loss.backward()
        opt_G.step()
        # DiscriminatorLoss.train_ops: z, D(x), G(z) (with grad, as theirs), D(G(z).detach()), BCE 1 + BCE 0.
        z = torch.randn(real.size(0), Z_DIM)
        opt_D.zero_grad()
        dx = D(real)
        dgz = D(G(z).detach())
        d_loss = (F.binary_cross_entropy_with_logits(dx, torch.ones_like(dgz))
                  + F.binary_cross_entropy_with_logits(dgz, torch.zeros_like(dx)))
        d_loss.backward()
        opt_D.step()


def child(peer: str, side: str, steps: int, threads: int) -> None:
    import torch

    torch.set_flush_denormal(True)  # before any thread starts, so OpenMP's workers inherit it
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench_peer_") as out:
        if peer == "torchgan":
            child_torchgan(side, steps, Path(out))
        else:
            import torch_mimicry  # noqa: F401 - measured only once this import works (see the docstring)

            raise SystemExit("torch-mimicry imports here, but its trainer has no child in bench_peers.py yet")


# ------------------------------------------------------------------------------------------ the parent

def last_error_line(text: str) -> str:
    """The line that says what went wrong: the last error line, else (a crash) the innermost Python frame
    faulthandler printed, else the last line; TensorFlow's own I/W log lines are skipped."""
    lines = [line.strip() for line in text.strip().splitlines()
             if line.strip() and not line.lstrip().startswith(("I0000", "W0000", "WARNING: All log messages"))]
    if "Fatal Python error" in text:
        frames = [line for line in lines if line.startswith('File "') and "<frozen" not in line]
        if frames:  # faulthandler lists the most recent call first
            return f"{next(line for line in lines if 'Fatal Python error' in line)} in {frames[0]}"[:300]
    errors = [line for line in lines if "Error" in line or "error:" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


def describe_rc(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by signal {-rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def make_venv(root: Path, peer: str) -> Path:
    """A venv of the peer's own whose Python also sees this interpreter's site-packages (torch)."""
    venv = root / peer
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "_parent_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def timed_child(python: Path, peer: str, side: str, steps: int, threads: int) -> Dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([str(python), __file__, "--child", peer, side, "--steps", str(steps),
                           "--threads", str(threads)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(rc=proc.returncode, wall_s=wall, cpu_s=cpu, output=proc.stdout + proc.stderr)


def bench_peer(peer: str, root: Path, args: argparse.Namespace) -> Dict[str, Any]:
    pypi, module = PEERS[peer]
    row: Dict[str, Any] = dict(peer=peer, pypi=pypi, steps=args.steps, batch=BATCH, threads=args.threads,
                               pairs=args.pairs, measurable=False)
    python = make_venv(root, peer)
    print(f"{peer}: pip install {pypi} (into {python.parent.parent})", file=sys.stderr)
    pip = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", pypi],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        row["reason"] = f"pip install {pypi} failed ({describe_rc(pip.returncode)}): {last_error_line(pip.stdout + pip.stderr)}"
        return row
    show = subprocess.run([str(python), "-m", "pip", "show", pypi], capture_output=True, text=True).stdout
    row["version"] = next((line.split(":", 1)[1].strip() for line in show.splitlines() if line.startswith("Version:")), None)
    # Import as a user would: the package alone first (its own import order), then after torch, then with
    # torch's lazily imported triton loaded first (TensorFlow loaded before triton crashes the process).
    for code in (f"import {module}", f"import torch; import {module}", f"import torch, triton; import {module}"):
        check = subprocess.run([str(python), "-X", "faulthandler", "-c", code], capture_output=True, text=True)
        row.setdefault("import_checks", []).append(
            dict(code=code, result="ok" if check.returncode == 0 else
                 f"{describe_rc(check.returncode)}: {last_error_line(check.stdout + check.stderr)}"))
    failed = [c for c in row["import_checks"] if c["result"] != "ok"]
    if failed:
        row["reason"] = "; ".join(f"`{c['code']}`: {c['result']}" for c in failed)
        return row
    if peer != "torchgan":
        row["reason"] = "imports, but bench_peers.py has no trainer/bare child for it yet"
        return row
    runs: Dict[str, List[Dict[str, Any]]] = {"trainer": [], "bare": []}
    for i in range(args.pairs + 1):  # pair 0 is the untimed warm-up (page cache, .pyc files)
        for side in (("trainer", "bare") if i % 2 else ("bare", "trainer")):
            r = timed_child(python, peer, side, args.steps, args.threads)
            if r["rc"] != 0:
                error = f"{side} run failed ({describe_rc(r['rc'])}): {last_error_line(r['output'])}"
                if f"{ITERATIONS_DONE}{args.steps}\n" not in r["output"]:
                    row["reason"] = error
                    return row
                # Every training iteration ran and the failure came after them: time it up to the
                # failure, flagged, and say what was not reached.
                row["partial"] = f"after all {args.steps} iterations: {error}"
            if i:
                runs[side].append(r)
            if i:
                runs[side].append(r)
        print(f"{peer}: pair {i} done (load {load()})", file=sys.stderr)
    for clock in ("wall_s", "cpu_s"):
        ratios = [t[clock] / b[clock] for t, b in zip(runs["trainer"], runs["bare"])]
        row[f"trainer_{clock}"] = [r[clock] for r in runs["trainer"]]
        row[f"bare_{clock}"] = [r[clock] for r in runs["bare"]]
        row[f"ratio_{clock[:-2]}_median"] = statistics.median(ratios)
        row[f"ratio_{clock[:-2]}_range"] = [min(ratios), max(ratios)]
    row["measurable"] = True
    return row


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", nargs="+", choices=sorted(PEERS), default=sorted(PEERS))
    parser.add_argument("--steps", type=int, default=20, help="generator iterations per process (default 20)")
    parser.add_argument("--pairs", type=int, default=3, help="timed pairs of processes (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in every process (default 1: steadier on a shared machine)")
    parser.add_argument("--venv-root", help="keep the peers' virtual environments here and reuse them "
                                             "(default: a temporary folder, removed at the end)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--child", nargs=2, metavar=("PEER", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key in ("steps", "pairs", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key}: must be an integer >= 1 (got {getattr(args, key)})")
    if args.child:
        child(args.child[0], args.child[1], args.steps, args.threads)
        return 0
    root = Path(args.venv_root) if args.venv_root else Path(tempfile.mkdtemp(prefix="bench_peers_"))
    root.mkdir(parents=True, exist_ok=True)
    load_before = load()
    try:
        rows = [bench_peer(peer, root, args) for peer in args.peers]
    finally:
        if not args.venv_root:
            shutil.rmtree(root, ignore_errors=True)
    import torch

    print(f"\nPyTorch {torch.__version__}; {os.cpu_count()} cores; {args.threads} thread(s); "
          f"load average {load_before} before, {load()} after")
    print(f"{'peer':<14} {'version':<8} {'steps':>5}  {'trainer/bare wall':<24} {'trainer/bare CPU':<24}")
    for r in rows:
        if r["measurable"]:
            w, c = r["ratio_wall_range"], r["ratio_cpu_range"]
            print(f"{r['peer']:<14} {r['version']:<8} {r['steps']:>5}  "
                  f"{r['ratio_wall_median']:.3f} ({w[0]:.2f}–{w[1]:.2f}){'':<8} {r['ratio_cpu_median']:.3f} ({c[0]:.2f}–{c[1]:.2f})")
            if r.get("partial"):
                print(f"{'':<14} timed up to its failure, {r['partial']}")
        else:
            print(f"{r['peer']:<14} {r.get('version') or '-':<8} {r['steps']:>5}  not measurable: {r['reason']}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(torch=torch.__version__, loadavg_before=load_before,
                                                   loadavg_after=load(), peers=rows), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
