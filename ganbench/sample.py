"""``ganbench-sample``: use a trained generator. Samples, a grid, latent walks, or a 2-D run's density plot.

    ganbench-sample RUN_DIR --n 50000 --out samples.npz     # uint8 NHWC under arr_0: external FID tools' input
    ganbench-sample RUN_DIR --n 1000 --out samples/         # one PNG per sample (torch-fidelity reads a folder)
    ganbench-sample RUN_DIR --grid --out grid.png           # --n samples (default 64) as one grid
    ganbench-sample RUN_DIR --walk 8 --out walk.png         # 8 latent interpolations (DRAGAN Figures 9-10), --slerp
    ganbench-sample RUN_DIR --density --out density.png     # a 2-D run: samples over D's level sets
    ganbench-sample RUN_DIR --n 2500 --out points.npz       # a 2-D run's samples, float32 (N, 2)

A 2-D run's --grid is its samples over real ones and its --walk each interpolation's path through the plane.

RUN_DIR is one run's directory (a replicated job's ``seed=<s>/`` folders are runs of their own). The generator
is rebuilt from the configuration the checkpoint carries and loaded from ``checkpoints/last.pt`` with
``torch.load(weights_only=True)``, so a run still training can be sampled at its last checkpoint. ``--ema``
takes the averaged generator (``train.g_average``). Latents are z ~ N(0, I) drawn on the CPU from ``--seed``,
so the output is the same on every device. Images are converted as the metrics convert them
(``clamp(x·127.5 + 128, 0, 255)`` truncated). Nothing is written unless everything succeeds: an existing
``--out`` is refused unless ``--force``, and the result is written to a temporary name and renamed into place.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

PROG = "ganbench-sample"


class SampleError(Exception):
    """A refusal of the sampler: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                epilog="Output kinds (one per call): samples (default), --grid, --walk K, --density (2-D runs).",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding checkpoints/last.pt)")
    p.add_argument("--out", required=True, help="where to write: a folder of PNGs, or FILE.npz / FILE.png")
    p.add_argument("--n", type=int, default=None, help="samples (default: 64 for --grid, 10000 otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    p.add_argument("--ema", action="store_true", help="the averaged generator (train.g_average=ema or uniform)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--grid", action="store_true", help="one PNG grid of --n samples")
    kind.add_argument("--walk", type=int, metavar="K", default=None, help="K latent interpolations, one per row")
    kind.add_argument("--density", action="store_true", help="2-D runs: samples over D's level sets (PNG)")
    p.add_argument("--steps", type=int, default=10, help="--walk: images per interpolation, ends included (10)")
    p.add_argument("--slerp", action="store_true", help="--walk: spherical instead of linear interpolation")
    p.add_argument("--nrow", type=int, default=None, help="--grid: images per row (default: about sqrt(n))")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--batch-size", type=int, default=500, help="samples generated at once (default 500)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    return p


# ---- the run: its checkpoint and its generator ----
def find_checkpoint(run_dir: Path) -> Path:
    """The run's checkpoint: ``checkpoints/last.pt`` (``prev.pt`` if a kill between renames left only it)."""
    from .run.checkpoint import previous_path

    if not run_dir.is_dir():
        raise SampleError(f"RUN_DIR: {run_dir} is not a directory")
    last = run_dir / "checkpoints" / "last.pt"
    for path in (last, previous_path(last)):
        if path.is_file():
            return path
    seeds = sorted(p.name for p in run_dir.glob("seed=*") if (p / "checkpoints").is_dir())
    hint = (f"; its runs are {', '.join(seeds[:6])}{' ...' if len(seeds) > 6 else ''}: give one of them"
            if seeds else "; a run writes it at its first train.ckpt_every step")
    raise SampleError(f"RUN_DIR: no checkpoint in {run_dir} (expected {last}){hint}")


def load_generator(run_dir: Path, ema: bool, device: Any) -> Tuple[Any, Any, Dict[str, Any], Path]:
    """(G in eval mode, D or None, the run's config, the checkpoint), G rebuilt from the checkpoint's config."""
    from omegaconf import OmegaConf

    from .run import checkpoint
    from .archs import data_shape
    from .config import validate
    from .errors import GanbenchError
    from .run.start import build_players, seed_everything

    path = find_checkpoint(run_dir)
    try:
        state = checkpoint.load(path)
    except GanbenchError as ex:
        raise SampleError(str(ex)) from None
    config = state.get("config") or {}
    if config.get("task", "gan") != "gan":
        raise SampleError(f"RUN_DIR: {run_dir} is a run of task={config.get('task')} (the GMM-GAN dynamics lab), "
                          "which has no generator network to sample")
    cfg = OmegaConf.create(config)
    try:
        spec = validate(cfg)
    except GanbenchError as ex:
        raise SampleError(f"the configuration in {path} no longer validates: {ex}") from None
    shape = data_shape(cfg.dataset)
    seed_everything(int(cfg.seed))  # as the run built them (a mixture's evaluation draws follow the seed)
    G, D = build_players(spec, cfg.arch, shape)
    if ema:
        if state.get("G_avg") is None:
            raise SampleError(f"--ema: the run in {run_dir} has no averaged generator (train.g_average="
                              f"{config.get('train', {}).get('g_average', 'none')}); drop --ema")
        prefix = "module."
        weights = {k[len(prefix):]: v for k, v in state["G_avg"].items() if k.startswith(prefix)}
    else:
        weights = state["G"]
    try:
        G.load_state_dict(weights)
        D.load_state_dict(state["D"])
    except (RuntimeError, KeyError) as ex:
        raise SampleError(f"{path} does not fit the networks its configuration builds "
                          f"({str(ex).splitlines()[0]})") from None
    G.to(device).eval()
    D.to(device).eval()
    return G, (D if spec.pack == 1 else None), config, path


def latents(n: int, z_dim: int, seed: int):
    """z ~ N(0, I), (n, z_dim), drawn on the CPU from ``seed``: the same on every device."""
    import torch

    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def generate(G: Any, z: Any, device: Any, batch_size: int) -> Any:
    """G(z) batch by batch, as float32 on the CPU."""
    import torch

    with torch.no_grad():
        return torch.cat([G(part.to(device)).float().cpu() for part in z.split(batch_size)])


def interpolate(z0: Any, z1: Any, steps: int, slerp: bool) -> Any:
    """``steps`` points from z0 to z1, ends included (t = 0, 1/(steps-1), ..., 1).

    Linear: (1 - t)·z0 + t·z1. Spherical (White 2016, "Sampling Generative Networks"):
    sin((1 - t)Ω)/sin Ω · z0 + sin(tΩ)/sin Ω · z1 with cos Ω = z0·z1 / (|z0| |z1|); linear where Ω ≈ 0.
    """
    import torch

    t = torch.linspace(0, 1, steps, dtype=z0.dtype).unsqueeze(1)
    if slerp:
        cos = (z0 @ z1) / (z0.norm() * z1.norm())
        omega = torch.arccos(cos.clamp(-1, 1))
        if float(omega.sin().abs()) > 1e-6:
            return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / omega.sin()
    return (1 - t) * z0 + t * z1


# ---- writing: nothing in place until it is complete ----
def check_out(out: Path, force: bool) -> None:
    if not out.parent.is_dir():
        raise SampleError(f"--out: the folder {out.parent} does not exist")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SampleError(f"--out: {out} exists and is not empty; choose another --out, or --force to replace it")
    if out.exists() and not out.is_dir() and not force:
        raise SampleError(f"--out: {out} exists; choose another --out, or --force to replace it")


def write_file(out: Path, write: Any) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_folder(out: Path, write: Any) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_png(image_chw_uint8: Any, path: Path) -> None:
    from PIL import Image

    array = image_chw_uint8.permute(1, 2, 0).numpy()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path, format="png")


def image_grid(images: Any, nrow: int) -> Any:
    """A uint8 (C, H, W) grid of [-1, 1] images, as the run's samples.png draws it (2-pixel padding)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1))
    return grid.mul(255).add_(0.5).clamp_(0, 255).to(__import__("torch").uint8)


def run(args: argparse.Namespace) -> str:
    """Do what ``args`` ask; returns the line printed on success."""
    import numpy as np
    import torch

    from .errors import check_torch_build
    from .run.start import resolve_device

    out = Path(args.out)
    for key, value, low in (("--n", args.n, 1), ("--walk", args.walk, 1), ("--steps", args.steps, 2),
                            ("--batch-size", args.batch_size, 1), ("--nrow", args.nrow, 1)):
        if value is not None and value < low:
            raise SampleError(f"{key}: must be an integer >= {low} (got {value})")
    check_out(out, args.force)
    from .errors import GanbenchError

    try:
        device = resolve_device(args.device)
    except GanbenchError as ex:
        raise SampleError(f"--device: {str(ex).split(': ', 1)[-1]}") from None
    G, D, config, path = load_generator(Path(args.run_dir), args.ema, device)
    points = config["dataset"].get("kind") == "points"
    which = "averaged G" if args.ema else "G"

    suffix = out.suffix.lower()
    if args.density and not points:
        raise SampleError(f"--density: only for 2-D runs; this run trains on dataset={config['dataset'].get('name')} "
                          "(images)")
    if (args.density or args.grid or args.walk is not None) and suffix != ".png":
        raise SampleError(f"--out: --{'density' if args.density else 'grid' if args.grid else 'walk'} writes a PNG "
                          "file (FILE.png)")
    if points:  # a 2-D run's outputs never import torchvision
        return points_output(args, G, D, config, device, out, which, path)
    check_torch_build()  # images go through torchvision: one line for a build of another torch, not a traceback
    from .metrics.features import images_to_uint8

    if args.walk is not None:
        ends = latents(2 * args.walk, G.z_dim, args.seed)
        z = torch.cat([interpolate(ends[2 * k], ends[2 * k + 1], args.steps, args.slerp) for k in range(args.walk)])
        grid = image_grid(generate(G, z, device, args.batch_size), nrow=args.steps)
        write_file(out, lambda tmp: save_png(grid, tmp))
        kind = "spherical" if args.slerp else "linear"
        return f"{PROG}: wrote {out}: {args.walk} {kind} interpolations of {args.steps} images, {which} ({path})"
    if args.grid:
        n = args.n or 64
        grid = image_grid(generate(G, latents(n, G.z_dim, args.seed), device, args.batch_size),
                          nrow=args.nrow or max(1, round(n ** 0.5)))
        write_file(out, lambda tmp: save_png(grid, tmp))
        return f"{PROG}: wrote {out}: a grid of {n} samples of {which} ({path})"
    n = args.n or 10000
    images = images_to_uint8(generate(G, latents(n, G.z_dim, args.seed), device, args.batch_size))
    if suffix == ".npz":
        nhwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        write_file(out, lambda tmp: np.savez(open(tmp, "wb"), arr_0=nhwc))
        return f"{PROG}: wrote {out}: {n} samples of {which}, uint8 {tuple(nhwc.shape)} NHWC under arr_0 ({path})"
    if suffix:
        raise SampleError(f"--out: {out} has the suffix {suffix}; samples go to a folder of PNGs or to FILE.npz")
    width = len(str(n - 1))

    def write_pngs(folder: Path) -> None:
        for i, image in enumerate(images):
            save_png(image, folder / f"{i:0{width}d}.png")

    write_folder(out, write_pngs)
    return f"{PROG}: wrote {out}/: {n} PNG samples of {which} ({path})"


def points_output(args: argparse.Namespace, G: Any, D: Any, config: Dict[str, Any], device: Any, out: Path,
                  which: str, path: Path) -> str:
    """A 2-D run's outputs: its samples as float32 (N, 2) points (FILE.npz); --grid: the samples over real ones,
    --density: the same over D's level sets, --walk: each interpolation's path through the plane (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from .run.board import density_figure
    from .data import build_dataset

    if not (args.density or args.grid or args.walk is not None):
        if out.suffix.lower() != ".npz":
            raise SampleError("--out: a 2-D run's samples are points: FILE.npz (or --grid, --density, --walk: FILE.png)")
        n = args.n or 10000
        x = generate(G, latents(n, G.z_dim, args.seed), device, args.batch_size).numpy().astype(np.float32)
        write_file(out, lambda tmp: np.savez(open(tmp, "wb"), arr_0=x))
        return f"{PROG}: wrote {out}: {n} points of {which}, float32 (N, 2) under arr_0 ({path})"
    data = build_dataset(OmegaConf.create(config["dataset"]), torch.device("cpu"), int(config["seed"]))
    n = args.n or 2500
    real = data.sample_eval(n, torch.Generator().manual_seed(args.seed + 1))
    G = G.cpu()
    if args.walk is None:
        fig = density_figure(G, D.cpu() if args.density and D is not None else None, latents(n, G.z_dim, args.seed),
                             real)
        what = f"{n} samples of {which}" + (" over D's level sets" if args.density else "")
    else:
        ends = latents(2 * args.walk, G.z_dim, args.seed)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=90)
        ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", alpha=0.3, label="real")
        for k in range(args.walk):
            z = interpolate(ends[2 * k], ends[2 * k + 1], args.steps, args.slerp)
            path_k = generate(G, z, torch.device("cpu"), args.batch_size).numpy()
            ax.plot(path_k[:, 0], path_k[:, 1], "-o", ms=3, lw=1)
            ax.plot(path_k[:1, 0], path_k[:1, 1], "k^", ms=5)  # where each walk starts
        bounds = float(real.abs().max()) * 1.4 + 0.1
        ax.set_xlim(-bounds, bounds)
        ax.set_ylim(-bounds, bounds)
        ax.set_aspect("equal")
        fig.tight_layout()
        what = f"{args.walk} {'spherical' if args.slerp else 'linear'} interpolations of {args.steps} points, {which}"
    write_file(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return f"{PROG}: wrote {out}: {what} ({path})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(run(args))
        return 0
    except SampleError as ex:
        print(f"{PROG}: error: {ex}", file=sys.stderr)
        return 1
    except OSError as ex:
        print(f"{PROG}: error: {ex.strerror or ex} ({ex.filename or args.out})", file=sys.stderr)
        return 1
    except Exception as ex:  # noqa: BLE001 - anything unforeseen is still one line
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from .errors import one_line_error

        print(f"{PROG}: error: {one_line_error(ex)} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
