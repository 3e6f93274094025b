"""ganbench's training step against a hand-written PyTorch loop of the same model, in the same process.

    python scripts/bench.py                          # every case below; prints the ratio table
    python scripts/bench.py --arch mlp --json bench.json
    python scripts/bench.py replicas                 # N sequential runs vs one train.replicas=N process
    python scripts/bench.py gpu                      # the DCGAN iteration per numeric mode vs its FLOP floor

For each case (arch, objective, batch, device) the two sides are

- **ganbench**: the config composed from ``conf/`` as the CLI composes it, checked and built by the
  package's own ``ganbench.run.start.prepare(cfg, run_dir)``; one call of ``Start.game.step()`` is one
  generator iteration (``objective.n_dis`` discriminator steps, then one generator step);
- **bare**: the same iteration written out as plain PyTorch below (``BareLoop``), on hand-built networks
  of the same layers, with the optimizer settings of ``conf/objective/*.yaml`` written out by hand.

Equal work is checked, not assumed: the bare networks start from ganbench's initial weights, both sides
take ``--check-steps`` iterations from the same RNG seed, and the largest relative parameter difference
(max |a - b| / max |b| over each tensor, largest over tensors) is printed. The bare loop makes the same
random draws in the same order (data indices, latents, the penalty's noise), so it is 0 when both sides do
the same maths; a value above 1e-4 is flagged, because then the ratio does not compare equal work.

Timing: ``--warmup`` rounds, then ``--repeats`` rounds; each round times a block of ``--steps``
iterations on each side, the side that goes first alternating from round to round. Quoted: the median
per-iteration time of each side and the median of the per-round ratios ganbench / bare (with its range).
"per D step" is the iteration time divided by n_dis (the generator step's share included).
CPU: denormals flushed (``torch.set_flush_denormal(True)``) before any thread starts, so that worker
threads inherit it; 1 thread for 2-D data (what ``threads=auto`` chooses), torch's default for images.

Cases: ``mlp`` = ring8, arch=mlp defaults (3 hidden layers of 128, z_dim 2), batch 256 (the quickstart's);
``dcgan`` = 32×32 RGB, arch=dcgan defaults (w=64, z_dim 100), batch 64, images from ``--images``
(the shared CIFAR-10 archive through ganbench's folder dataset when present, else random PNGs written to
a temporary folder); objectives vanilla (non-saturating), dragan (reference perturbation, λ=10, k=1),
wgan_gp (n_dis=5, λ=10).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
OBJECTIVES = ("vanilla", "dragan", "wgan_gp")
ARCHS = ("mlp", "dcgan")

# The recipes of conf/objective/{vanilla,dragan,wgan_gp}.yaml, written out by hand for the bare loop
# (and checked against the composed config, so a changed YAML is reported rather than timed unequally).
RECIPES = {
    "vanilla": dict(loss="nonsaturating", penalty=None, n_dis=1, lr=2e-4, betas=(0.5, 0.999)),
    "dragan": dict(loss="nonsaturating", penalty="dragan", n_dis=1, lr=1e-4, betas=(0.5, 0.9)),
    "wgan_gp": dict(loss="wasserstein", penalty="wgan_gp", n_dis=5, lr=1e-4, betas=(0.5, 0.9)),
}
LAMBDA, K_NORM, DRAGAN_SCALE = 10.0, 1.0, 0.5
# Per arch: batch, generator iterations per timed block, rounds, warm-up rounds, check iterations.
DEFAULTS = {
    "mlp": dict(batch=256, steps=100, repeats=9, warmup=2, check_steps=20),
    "dcgan": dict(batch=64, steps=1, repeats=5, warmup=1, check_steps=2),
}
FLAG_REL_DIFF = 1e-4
QUIET = ["train.progress=false", "eval.every=0", "metrics.names=[]"]


# ----------------------------------------------------------------------------------------- the bare side

def ring8_centres() -> Tensor:
    """ring8: 2·(cos 2πi/8, sin 2πi/8), computed in float64 and rounded once, as the dataset does."""
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    return (2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def bare_mlp(n_in: int, n_out: int, width: int = 128, depth: int = 3) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def bare_dcgan_g(z_dim: int = 100, w: int = 64) -> nn.Sequential:
    """Radford et al. for 32×32: z → 4×4×4w → 8×8×2w → 16×16×w → 32×32×3; BN + ReLU, tanh output."""
    return nn.Sequential(
        nn.ConvTranspose2d(z_dim, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
        nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
        nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Tanh())


def bare_dcgan_d(batchnorm: bool, w: int = 64) -> nn.Sequential:
    """D mirrors G: stride-2 4×4 convolutions, LeakyReLU(0.2), BN except on the first layer when
    ``batchnorm`` (arch.d_norm=auto gives none under a gradient penalty), a 4×4 → 1×1 linear output."""
    layers: List[nn.Module] = [nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for c_in in (w, 2 * w):
        layers.append(nn.Conv2d(c_in, 2 * c_in, 4, 2, 1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(2 * c_in))
        layers.append(nn.LeakyReLU(0.2, True))
    return nn.Sequential(*layers, nn.Conv2d(4 * w, 1, 4, 1, 0))


class BareLoop:
    """One generator iteration of alternating GAN training, written out:

    n_dis times: x = a real batch, x̃ = G(z) without grad; L_D = E softplus(-D(x)) + E softplus(D(x̃))
    (non-saturating) or E D(x̃) - E D(x) (Wasserstein), on one D(cat(x, x̃)) pass unless D has batch norm;
    plus λ E(‖∇D(x̂)‖ - 1)² with x̂ = x + α(x_p - x), x_p = x + 0.5·std(x)·u (DRAGAN, reference noise) or
    x̂ = εx + (1-ε)x̃ (WGAN-GP); one Adam step. Then G: L_G = E softplus(-D(G(z'))) or -E D(G(z')), D frozen.
    """

    def __init__(self, arch: str, objective: str, batch: int, device: torch.device, images: Optional[Tensor]):
        r = RECIPES[objective]
        self.B, self.device, self.n_dis = batch, device, r["n_dis"]
        self.wasserstein, self.penalty = r["loss"] == "wasserstein", r["penalty"]
        if arch == "mlp":
            self.z_shape: tuple = (2,)
            self.G, self.D = bare_mlp(2, 2), bare_mlp(2, 1)
            self.centres = ring8_centres().to(device)
            self.sample = self.sample_points
        else:
            self.z_shape = (100, 1, 1)
            self.G, self.D = bare_dcgan_g(), bare_dcgan_d(batchnorm=self.penalty is None)
            self.images = images
            self.sample = self.sample_images
        # arch.d_norm=auto: batch norm in D unless a gradient penalty is active; then real and fake batches
        # go through D separately (batch statistics would mix them), else in one pass.
        self.d_batchnorm = arch == "dcgan" and self.penalty is None
        self.G.to(device), self.D.to(device)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=r["lr"], betas=r["betas"])
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=r["lr"], betas=r["betas"])

    def sample_points(self, n: int) -> Tensor:
        k = torch.randint(8, (n,), device=self.device)
        return self.centres[k] + 0.02 * torch.randn(n, 2, device=self.device)

    def sample_images(self, n: int) -> Tensor:
        idx = torch.randint(self.images.shape[0], (n,), device=self.device)
        return self.images.index_select(0, idx).to(torch.float32).div_(127.5).sub_(1.0)

    def z(self) -> Tensor:
        return torch.randn(self.B, self.z_shape[0], device=self.device).view(self.B, *self.z_shape)

    def step(self) -> None:
        G, D, B = self.G, self.D, self.B
        for _ in range(self.n_dis):
            real = self.sample(B)
            with torch.no_grad():
                fake = G(self.z())
            if self.d_batchnorm:
                real_out, fake_out = D(real).flatten(), D(fake).flatten()
            else:
                real_out, fake_out = D(torch.cat([real, fake])).flatten().split(B)
            if self.wasserstein:
                d_loss = fake_out.mean() - real_out.mean()
            else:
                d_loss = F.softplus(-real_out).mean() + F.softplus(fake_out).mean()
            shape = (B,) + (1,) * (real.dim() - 1)
            if self.penalty == "dragan":
                x_p = real + DRAGAN_SCALE * real.std(correction=0) * torch.rand_like(real)
                x_hat = real + torch.rand(shape, device=self.device) * (x_p - real)
            elif self.penalty == "wgan_gp":
                eps = torch.rand(shape, device=self.device)
                x_hat = eps * real + (1 - eps) * fake
            if self.penalty is not None:
                x_hat = x_hat.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
                d_loss = d_loss + LAMBDA * (torch.linalg.vector_norm(grad.flatten(1), dim=1) - K_NORM).square().mean()
            self.opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_D.step()
        D.requires_grad_(False)
        out = D(G(self.z())).flatten()
        g_loss = -out.mean() if self.wasserstein else F.softplus(-out).mean()
        self.opt_G.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_G.step()
        D.requires_grad_(True)


# ------------------------------------------------------------------------------------- the ganbench side

def compose(overrides: List[str]):
    """The config the CLI composes for ``overrides`` (without the hydra node), as tests/conftest.py does."""
    from hydra import compose as hydra_compose, initialize_config_dir

    import ganbench.cli as cli  # registers the gb.dirname resolver

    with initialize_config_dir(cli.config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=False)


def arch_overrides(arch: str, images: str, data_root: Optional[str]) -> List[str]:
    if arch == "mlp":
        return ["dataset=ring8", "arch=mlp"]
    extra = [f"dataset.root={data_root}"] if data_root else []
    return ["dataset=folder", f"dataset.path={images}", "arch=dcgan"] + extra


def check_recipe(cfg: Any, objective: str) -> None:
    """The hand-written recipe must be the composed one, or the two sides would not do the same maths."""
    r = RECIPES[objective]
    got = dict(loss=cfg.objective.loss, penalty=None if cfg.penalty.name == "none" else cfg.penalty.name,
               n_dis=int(cfg.objective.n_dis), lr=float(cfg.optimizer.d.lr), betas=tuple(cfg.optimizer.d.betas))
    if cfg.penalty.name != "none":
        got_pen = (float(cfg.penalty.lambda_), float(cfg.penalty.k), int(cfg.penalty.every))
        if got_pen != (LAMBDA, K_NORM, 1):
            sys.exit(f"bench.py: conf/penalty/{cfg.penalty.name}.yaml has (lambda_, k, every) = {got_pen}; "
                     f"the bare loop writes {(LAMBDA, K_NORM, 1)}: update RECIPES/LAMBDA in scripts/bench.py")
    if got != r:
        sys.exit(f"bench.py: objective={objective} composes {got}, the bare loop writes {r}: "
                 "update RECIPES in scripts/bench.py")


def copy_state(src: nn.Module, dst: nn.Module, what: str) -> None:
    """ganbench's weights and buffers into the bare network; its layers are ``src.net`` in both archs."""
    state = {k[len("net."):] if k.startswith("net.") else k: v for k, v in src.state_dict().items()}
    try:
        dst.load_state_dict(state)
    except RuntimeError as ex:
        sys.exit(f"bench.py: the bare {what} does not have ganbench's layers any more "
                 f"({str(ex).splitlines()[0]}): update bare_* in scripts/bench.py")


def max_rel_diff(a: nn.Module, b: nn.Module) -> float:
    """max over tensors of max|a - b| / max|b| (parameters and float buffers, in state_dict order)."""
    worst = 0.0
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        if not x.is_floating_point():
            continue
        scale = y.abs().max().item() or 1.0
        worst = max(worst, (x - y).abs().max().item() / scale)
    return worst


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(fn: Callable[[], Any], n: int, device: torch.device) -> tuple:
    """(wall s, process CPU s) per call of ``fn`` over ``n`` calls, the device drained before and after.

    CPU time is the steadier clock on a shared machine for one thread (time the scheduler gives to other
    jobs is not counted); with several threads it also counts OpenMP's spin-waiting, so both are kept."""
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


def random_image_folder(root: Path, n: int = 512) -> Path:
    """``n`` random 32×32 RGB PNGs (no download needed): the conv work does not depend on the pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")
    return root


def bench_case(arch: str, objective: str, device: torch.device, opts: Dict[str, int], images: str,
               data_root: Optional[str], default_threads: int) -> Dict[str, Any]:
    from ganbench.run.start import prepare

    threads = 1 if arch == "mlp" else default_threads
    overrides = arch_overrides(arch, images, data_root) + [
        f"objective={objective}", f"train.batch_size={opts['batch']}", f"device={device}",
        f"threads={threads}"] + QUIET
    cfg = compose(overrides)
    check_recipe(cfg, objective)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench_") as run_dir:
        start = prepare(cfg, Path(run_dir))
    game = start.game
    images_u8 = start.data.real_uint8().to(device) if arch == "dcgan" else None
    bare = BareLoop(arch, objective, opts["batch"], device, images_u8)
    copy_state(game.G, bare.G, "G")
    copy_state(game.D, bare.D, "D")

    # ---- equal work: the same iterations from the same state and the same RNG seed ----
    torch.manual_seed(1234)
    for _ in range(opts["check_steps"]):
        game.step()
    torch.manual_seed(1234)
    for _ in range(opts["check_steps"]):
        bare.step()
    rel = max(max_rel_diff(game.G, bare.G), max_rel_diff(game.D, bare.D))

    # ---- timing: interleaved rounds, the side that goes first alternating ----
    sides = {"ganbench": game.step, "bare": bare.step}
    wall: Dict[str, List[float]] = {"ganbench": [], "bare": []}
    cpu: Dict[str, List[float]] = {"ganbench": [], "bare": []}
    for r in range(opts["warmup"] + opts["repeats"]):
        order = ("ganbench", "bare") if r % 2 == 0 else ("bare", "ganbench")
        for side in order:
            w, c = time_block(sides[side], opts["steps"], device)
            if r >= opts["warmup"]:
                wall[side].append(w)
                cpu[side].append(c)
    n_dis = RECIPES[objective]["n_dis"]
    row = dict(arch=arch, objective=objective, batch=opts["batch"], device=str(device), threads=threads,
               n_dis=n_dis, check_steps=opts["check_steps"], max_rel_diff=rel, equal_work=rel <= FLAG_REL_DIFF,
               steps_per_block=opts["steps"], repeats=opts["repeats"], warmup=opts["warmup"])
    for clock, times in (("wall", wall), ("cpu", cpu)):
        ratios = [g / b for g, b in zip(times["ganbench"], times["bare"])]
        g_med, b_med = statistics.median(times["ganbench"]), statistics.median(times["bare"])
        row.update({f"{clock}_ganbench_s_per_iter": g_med, f"{clock}_bare_s_per_iter": b_med,
                    f"{clock}_ganbench_s_per_d_step": g_med / n_dis, f"{clock}_bare_s_per_d_step": b_med / n_dis,
                    f"{clock}_ratio_median": statistics.median(ratios), f"{clock}_ratio_min": min(ratios),
                    f"{clock}_ratio_max": max(ratios), f"{clock}_ganbench_samples_s": times["ganbench"],
                    f"{clock}_bare_samples_s": times["bare"]})
    return row


def machine() -> Dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = dict(torch=torch.__version__, python=platform.python_version(), cpu=model, cores=os.cpu_count(),
                default_threads=torch.get_num_threads(), cuda=torch.cuda.is_available())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def loadavg() -> Optional[str]:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def print_table(rows: List[Dict[str, Any]]) -> None:
    head = ("arch", "objective", "batch", "device", "thr", "ganbench ms/it", "bare ms/it", "ganbench ms/D",
            "bare ms/D", "ratio wall", "range", "ratio CPU", "range", "max rel diff")
    lines = [head]
    for r in rows:
        diff = f"{r['max_rel_diff']:.1e}" + ("" if r["equal_work"] else " UNEQUAL")
        lines.append((r["arch"], r["objective"], str(r["batch"]), r["device"], str(r["threads"]),
                      fmt_ms(r["wall_ganbench_s_per_iter"]), fmt_ms(r["wall_bare_s_per_iter"]),
                      fmt_ms(r["wall_ganbench_s_per_d_step"]), fmt_ms(r["wall_bare_s_per_d_step"]),
                      f"{r['wall_ratio_median']:.3f}", f"{r['wall_ratio_min']:.2f}–{r['wall_ratio_max']:.2f}",
                      f"{r['cpu_ratio_median']:.3f}", f"{r['cpu_ratio_min']:.2f}–{r['cpu_ratio_max']:.2f}", diff))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("ms/it: wall time per generator iteration (median); ms/D: that divided by n_dis; ratio: median over "
          "rounds of ganbench / bare, wall clock and process CPU time")


def cmd_steps(args: argparse.Namespace) -> int:
    # Before any parallel region: OpenMP's worker threads inherit the flush-to-zero mode of this thread.
    torch.set_flush_denormal(True)
    default_threads = torch.get_num_threads()
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    import logging

    logging.getLogger("ganbench").setLevel(logging.WARNING)  # prepare() logs device/parameter lines
    rows: List[Dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        images, data_root = args.images, None
        if "dcgan" in args.arch and (images == "random" or not Path(images).exists()):
            if images != "random":
                print(f"bench.py: {images} is absent: using random 32x32 images", file=sys.stderr)
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_images_")))
            images, data_root = str(random_image_folder(tmp / "images")), str(tmp / "root")
        load_before = loadavg()
        for arch in args.arch:
            opts = dict(DEFAULTS[arch])
            for key in opts:
                value = getattr(args, key)
                if value is not None:
                    opts[key] = value
            for objective in args.objective:
                row = bench_case(arch, objective, device, opts, images, data_root, default_threads)
                row["loadavg_after"] = loadavg()
                rows.append(row)
                print(f"{arch} {objective}: ganbench/bare {row['wall_ratio_median']:.3f} wall, "
                      f"{row['cpu_ratio_median']:.3f} CPU "
                      f"(max rel diff {row['max_rel_diff']:.1e}, load {row['loadavg_after']})", file=sys.stderr)
    info = machine()
    print(f"\nPyTorch {info['torch']}, {info['cpu']} ({info['cores']} cores), device {device}, "
          f"load average {load_before} before, {loadavg()} after; images: {args.images if 'dcgan' in args.arch else '-'}")
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, loadavg_before=load_before, loadavg_after=loadavg(),
                                                   images=args.images, cases=rows), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(r["equal_work"] for r in rows) else 1


# ------------------------------------------------------------------------------ replicas (the lead's section)

REPLICA_TOY = ["dataset=ring8", "arch=mlp", "arch.width=64", "train.batch_size=128", "objective=dragan",
               "train.progress=false", "device=cpu"]


def replica_overrides(arch: str, images: Optional[str], root: Optional[str]) -> List[str]:
    """The replicas benchmark's run: the toy MLP, or a DCGAN (w=32, batch 64) on random 32×32 images."""
    if arch == "mlp":
        return REPLICA_TOY
    return ["dataset=folder", f"dataset.path={images}", f"dataset.root={root}", "arch=dcgan", "arch.width=32",
            "train.batch_size=64", "objective=dragan", "train.progress=false"]


def replica_step_time(base: List[str], n: int, threads: int, steps: int, repeats: int,
                      device: str = "cpu") -> float:
    """Median seconds of one generator step of ``train.replicas=n`` (n=1: one run) over ``repeats`` blocks,
    the device drained before and after each block."""
    from ganbench.run.start import prepare

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench_replicas_") as tmp:
        game = prepare(compose(base + [f"train.replicas={n}", f"threads={threads}", f"device={device}"]),
                       Path(tmp) / "seed=0").game
        for _ in range(max(2, steps // 5)):  # warm-up: allocator, Adam's lazy state
            game.step()
        times = []
        for _ in range(repeats):
            times.append(time_block(game.step, steps, game.device)[0])
    return statistics.median(times)


def cmd_replicas(args: argparse.Namespace) -> int:
    """N sequential runs vs one ``train.replicas=N`` process (toy ring8, MLP width 64, DRAGAN, batch 128; or
    ``--arch dcgan``: DCGAN w=32, DRAGAN, batch 64, random 32×32 images).

    The throughput of N sequential runs is one run's step time; the replicated step trains N runs at once,
    so the speed-up is N·t(1)/t(N). Both in this process, median over repeats after warm-up, denormals
    flushed; the sequential runs use one thread for the MLP (ganbench's threads=auto for 2-D data) and every
    core for the DCGAN, the replicated step is timed with 1 thread and with every core.
    """
    torch.set_flush_denormal(True)
    logging.getLogger("ganbench").setLevel(logging.WARNING)
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench_replicas_data_") as tmp:
        images = str(random_image_folder(Path(tmp) / "images", 128)) if args.arch == "dcgan" else None
        base = replica_overrides(args.arch, images, f"{tmp}/root")
        steps = args.steps or (200 if args.arch == "mlp" else 3)
        single_threads = 1 if args.arch == "mlp" else (os.cpu_count() or 1)
        t1 = replica_step_time(base, 1, single_threads, steps, args.repeats or 5, args.device)
        rows = []
        for n in args.n:
            for threads in (sorted({1, os.cpu_count() or 1}) if args.device == "cpu" else [1]):
                tn = replica_step_time(base, n, threads, max(2, steps // n * 2) if args.arch == "mlp" else 2,
                                       args.repeats or 5, args.device)
                rows.append({"replicas": n, "threads": threads, "step_ms": tn * 1e3, "per_run_ms": tn * 1e3 / n,
                             "speedup_vs_sequential": n * t1 / tn})
    info = machine()
    print(f"PyTorch {info['torch']}, {info['cpu']} ({info['cores']} cores); {args.arch}; load {load_before} before, "
          f"{loadavg()} after; one run: {t1 * 1e3:.2f} ms per step ({single_threads} thread(s))")
    print("| replicas | threads | ms per step | ms per run-step | speed-up vs sequential runs |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['replicas']} | {r['threads']} | {r['step_ms']:.2f} | {r['per_run_ms']:.3f} | "
              f"{r['speedup_vs_sequential']:.1f}× |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, arch=args.arch, loadavg_before=load_before,
                                                   loadavg_after=loadavg(), single_step_ms=t1 * 1e3, cases=rows),
                                              indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """train.compile: ganbench's eager step against its compiled step (DRAGAN and WGAN-GP), with the one-off
    compile time. MLP: ring8, width 128, batch 256, 1 thread; DCGAN: random 32×32 images, arch.width, batch 64."""
    from ganbench.run.start import prepare

    torch.set_flush_denormal(True)
    logging.getLogger("ganbench").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        images = str(random_image_folder(Path(tmp) / "images", 128))
        for arch in (["toy"] if args.toy else args.arch):
            base = (["dataset=ring8", "arch=mlp", "train.batch_size=256", "threads=1"] if arch == "mlp" else
                    ["dataset=folder", f"dataset.path={images}", f"dataset.root={tmp}/root", "arch=dcgan",
                     f"arch.width={args.width}", "train.batch_size=64"] if arch == "dcgan" else
                    # one job of the toy comparison: its protocol, 10 trials as replicas, grid25
                    ["experiment=toy_mode_collapse", "dataset=grid25", "threads=1"] + QUIET)
            for objective in args.objective:
                if arch == "toy":
                    objective = f"arm={objective}"
                steps = args.steps or (3 if arch == "dcgan" else 100)
                times = {}
                for compiled in (False, True):
                    what = objective if objective.startswith("arm=") else f"objective={objective}"
                    cfg = compose(base + [what, "device=cpu", f"train.compile={compiled}"])
                    game = prepare(cfg, Path(tmp) / f"{arch}{objective}{compiled}").game
                    t = time.perf_counter()
                    game.step()  # compiles when asked
                    first = time.perf_counter() - t
                    game.step()
                    blocks = []
                    for _ in range(args.repeats or 3):
                        t = time.perf_counter()
                        for _ in range(steps):
                            game.step()
                        blocks.append((time.perf_counter() - t) / steps)
                    times[compiled] = (statistics.median(blocks), first)
                row = {"arch": arch, "objective": objective, "eager_ms": times[False][0] * 1e3,
                       "compiled_ms": times[True][0] * 1e3, "speedup": times[False][0] / times[True][0],
                       "compile_s": times[True][1], "load": loadavg()}
                rows.append(row)
                print(f"{arch} {objective}: eager {row['eager_ms']:.2f} ms, compiled {row['compiled_ms']:.2f} ms "
                      f"({row['speedup']:.2f}×), first compiled step {row['compile_s']:.1f} s, load {row['load']}",
                      flush=True)
    info = machine()
    print(f"PyTorch {info['torch']}, {info['cpu']} ({info['cores']} cores)")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, cases=rows), indent=2) + "\n")
    return 0


# Dense peak throughput of one H100 SXM (NVIDIA's datasheet, without sparsity), by the precision a mode's
# products run in: the FLOP floor of a step is its counted FLOPs over this.
PEAKS = {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12}
GPU_MODES = {  # mode -> (overrides, the peak its products run at)
    "fp32": (["train.tf32=false"], "fp32"),
    "tf32": (["train.tf32=true"], "tf32"),
    "bf16": (["train.precision=bf16"], "bf16"),
    "compiled": (["train.compile=true"], "tf32"),
    "compiled-bf16": (["train.compile=true", "train.precision=bf16"], "bf16"),
    "cuda-graphs": (["train.compile=reduce-overhead"], "tf32"),
}


def step_flops(game: Any) -> int:
    """FLOPs of one generator iteration of ``game``: torch's own per-operator formulas
    (``torch.utils.flop_counter.flop_registry``: products and convolutions, forward, backward and a penalty's
    double backward) summed by a dispatch mode. (FlopCounterMode itself hooks modules in a way that
    ``autograd.grad``, which the penalties call, does not support.)"""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    total = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                total[0] += formula(*args, **kwargs, out_val=out)
            return out

    with Count():
        game.step()
    return total[0]


def cmd_gpu(args: argparse.Namespace) -> int:
    """The card's main job: one DCGAN 32×32 generator iteration (vanilla, DRAGAN, WGAN-GP) per numeric mode
    (fp32 = IEEE, tf32, bf16 autocast, train.compile, compile + bf16, compile + CUDA graphs), timed after warm-up
    with the device drained, against its FLOP floor (counted FLOPs / the H100's dense peak of the mode's
    precision)."""
    from ganbench.run.start import prepare

    torch.set_flush_denormal(True)
    logging.getLogger("ganbench").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        images = str(random_image_folder(Path(tmp) / "images", 256))
        base = ["dataset=folder", f"dataset.path={images}", f"dataset.root={tmp}/root", "arch=dcgan",
                f"arch.width={args.width}", "train.batch_size=64", f"device={args.device}"] + QUIET
        for objective in args.objective:
            flops = None
            for mode in args.modes:
                overrides, peak = GPU_MODES[mode]
                game = prepare(compose(base + [f"objective={objective}"] + overrides), Path(tmp) / f"{objective}{mode}").game
                t = time.perf_counter()
                for _ in range(args.warmup):  # compiles, autotunes, fills the allocator
                    game.step()
                sync(game.device)
                first = time.perf_counter() - t
                if flops is None:
                    flops = step_flops(game)
                per_step = statistics.median(time_block(game.step, args.steps, game.device)[0]
                                             for _ in range(args.repeats))
                floor = flops / PEAKS[peak]
                rows.append({"objective": objective, "mode": mode, "ms": per_step * 1e3, "gflop": flops / 1e9,
                             "floor_ms": floor * 1e3, "x_floor": per_step / floor, "warmup_s": first})
                print(f"{objective} {mode}: {per_step * 1e3:.3f} ms per iteration, {flops / 1e9:.2f} GFLOP, floor "
                      f"{floor * 1e3:.3f} ms ({per_step / floor:.1f}x), warm-up {first:.1f} s", flush=True)
                if args.json:  # after every case: a time limit keeps the figures measured so far
                    Path(args.json).write_text(json.dumps(dict(machine=machine(), peaks=PEAKS, cases=rows),
                                                          indent=2) + "\n")
    info = machine()
    print(f"PyTorch {info['torch']}, {info.get('gpu') or info['cpu']}, load {loadavg()}")
    print("| objective | mode | ms per iteration | GFLOP | floor ms | × floor |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['objective']} | {r['mode']} | {r['ms']:.3f} | {r['gflop']:.2f} | {r['floor_ms']:.3f} | "
              f"{r['x_floor']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, peaks=PEAKS, cases=rows), indent=2) + "\n")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    rep = sub.add_parser("replicas", help="N sequential runs vs one train.replicas=N process")
    rep.add_argument("--n", type=int, nargs="+", default=[50], help="numbers of replicas (default 50)")
    rep.add_argument("--arch", choices=ARCHS, default="mlp", help="mlp (the toy run, default) or dcgan")
    rep.add_argument("--steps", type=int, help="generator steps per timed block of one run (default 200)")
    rep.add_argument("--repeats", type=int, help="timed blocks (default 5)")
    rep.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    rep.add_argument("--json", help="also write the figures to this JSON file")
    comp = sub.add_parser("compile", help="train.compile: eager vs compiled step, and the compile time")
    comp.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    comp.add_argument("--objective", nargs="+", default=["dragan", "wgan_gp"])
    comp.add_argument("--width", type=int, default=32, help="dcgan arch.width (default 32)")
    comp.add_argument("--steps", type=int, help="steps per timed block (mlp 100, dcgan 3)")
    comp.add_argument("--repeats", type=int, help="timed blocks (default 3)")
    comp.add_argument("--toy", action="store_true",
                      help="one job of the toy comparison instead (toy_mode_collapse, grid25, 10 replicas; "
                           "--objective names its arms)")
    comp.add_argument("--json", help="also write the figures to this JSON file")
    gpu = sub.add_parser("gpu", help="the DCGAN 32x32 iteration per numeric mode against its FLOP floor")
    gpu.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    gpu.add_argument("--objective", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES))
    gpu.add_argument("--modes", nargs="+", choices=list(GPU_MODES), default=list(GPU_MODES))
    gpu.add_argument("--width", type=int, default=64, help="dcgan arch.width (default 64, the DCGAN)")
    gpu.add_argument("--steps", type=int, default=50, help="iterations per timed block (default 50)")
    gpu.add_argument("--repeats", type=int, default=5, help="timed blocks (default 5)")
    gpu.add_argument("--warmup", type=int, default=5, help="untimed iterations first (default 5)")
    gpu.add_argument("--json", help="also write the figures to this JSON file")
    steps = sub.add_parser("steps", help="ganbench's step vs the bare loop (the default command)")
    for p in (parser, steps):
        p.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
        p.add_argument("--objective", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES))
        p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
        p.add_argument("--batch", type=int, help="batch size (default: mlp 256, dcgan 64)")
        p.add_argument("--steps", type=int, help="generator iterations per timed block (mlp 100, dcgan 1)")
        p.add_argument("--repeats", type=int, help="timed rounds (mlp 9, dcgan 5)")
        p.add_argument("--warmup", type=int, help="untimed rounds first (mlp 2, dcgan 1)")
        p.add_argument("--check-steps", type=int, help="iterations of the equal-work check (mlp 20, dcgan 2)")
        p.add_argument("--images", default=str(SHARED_CIFAR),
                       help="dcgan: an image folder/archive for ganbench's folder dataset, or 'random' "
                            "(default: the shared CIFAR-10 archive, random images when it is absent)")
        p.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    for key in ("batch", "steps", "repeats", "check_steps"):
        value = getattr(args, key, None)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')}: must be an integer >= 1 (got {value})")
    if getattr(args, "warmup", None) is not None and args.warmup < 0:
        parser.error(f"--warmup: must be an integer >= 0 (got {args.warmup})")
    if args.command == "replicas":
        return cmd_replicas(args)
    if args.command == "compile":
        return cmd_compile(args)
    if args.command == "gpu":
        return cmd_gpu(args)
    return cmd_steps(args)


if __name__ == "__main__":
    sys.exit(main())
