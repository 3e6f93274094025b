"""Training throughput of ganbench against a plain PyTorch loop doing the same maths.

Both sides train DRAGAN (non-saturating loss + the reference DRAGAN penalty, Adam) for the same number of
generator steps, on the same model and data, as whole processes. Time them in pairs and quote the ratio:

    python scripts/bench_train.py --impl ganbench --preset toy --steps 3000
    python scripts/bench_train.py --impl plain    --preset toy --steps 3000

Presets: ``toy`` (ring8, MLP 3×128, batch 256, 1 thread) and ``dcgan`` (random 32×32 images in memory,
DCGAN w=64, batch 64). ganbench runs with its logging, progress bar off, and no evaluation but the final
one disabled (``metrics.names=[]``) so that the comparison is the loop itself; it still writes
TensorBoard scalars every 100 steps and a checkpoint at the end, as a real run does.
"""
import argparse
import math
import sys
import tempfile
import time

PRESETS = {
    "toy": ["dataset=ring8", "arch=mlp", "arch.z_dim=2", "arch.width=128", "arch.depth=3", "train.batch_size=256",
            "threads=1"],
    "dcgan": ["dataset=folder", "arch=dcgan", "train.batch_size=64"],
}


def run_ganbench(preset: str, steps: int, images: str) -> None:
    from ganbench.cli import main

    out = tempfile.mkdtemp(prefix="bench_ganbench_")
    args = PRESETS[preset] + [
        "objective=dragan", f"train.iterations={steps}", "train.log_every=100", f"train.sample_every={steps}",
        f"train.ckpt_every={steps}", "train.progress=false", "metrics.names=[]", "eval.every=0",
        f"hydra.run.dir={out}", "hydra/job_logging=disabled",
    ]
    if preset == "dcgan":
        args.append(f"dataset.path={images}")
    sys.argv = ["ganbench"] + args
    main()


def run_plain(preset: str, steps: int, images: str) -> None:
    """The reference: the same step written as a plain PyTorch loop (no logging, no checkpoints)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    if preset == "toy":
        torch.set_num_threads(1)
        z_dim, B = 2, 256

        def mlp(n_in, n_out):
            return nn.Sequential(nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                 nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, n_out))

        G, D = mlp(z_dim, 2), mlp(2, 1)
        angles = torch.arange(8) * 2 * math.pi / 8
        centres = 2.0 * torch.stack([angles.cos(), angles.sin()], 1)

        def sample(n):
            return centres[torch.randint(8, (n,))] + 0.02 * torch.randn(n, 2)
    else:
        z_dim, B, w = 100, 64, 64
        G = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Tanh())
        D = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(4 * w, 1, 4, 1, 0))
        data = torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8)

        def sample(n):
            return data[torch.randint(len(data), (n,))].float() / 127.5 - 1

    opt_G = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.5, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), 1e-4, betas=(0.5, 0.9))
    for _ in range(steps):
        real = sample(B)
        with torch.no_grad():
            fake = G(torch.randn(B, z_dim, *((1, 1) if preset == "dcgan" else ())))
        out = D(torch.cat([real, fake])).flatten()
        d_loss = F.softplus(-out[:B]).mean() + F.softplus(out[B:]).mean()
        x_p = real + 0.5 * real.std(correction=0) * torch.rand_like(real)
        alpha = torch.rand((B,) + (1,) * (real.dim() - 1))
        x_hat = (real + alpha * (x_p - real)).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
        penalty = 10 * (grad.flatten(1).norm(dim=1) - 1).square().mean()
        opt_D.zero_grad()
        (d_loss + penalty).backward()
        opt_D.step()
        for p in D.parameters():
            p.requires_grad_(False)
        g_loss = F.softplus(-D(G(torch.randn(B, z_dim, *((1, 1) if preset == "dcgan" else ())))).flatten()).mean()
        opt_G.zero_grad()
        g_loss.backward()
        opt_G.step()
        for p in D.parameters():
            p.requires_grad_(True)
    torch.save({"G": G.state_dict(), "D": D.state_dict()}, tempfile.mktemp(suffix=".pt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=["ganbench", "plain"], required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="toy")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--images", default="", help="dcgan preset: an image folder/archive for ganbench's folder dataset")
    args = parser.parse_args()
    import torch

    torch.set_flush_denormal(True)  # without it CPU step times swing wildly
    t = time.perf_counter()
    (run_ganbench if args.impl == "ganbench" else run_plain)(args.preset, args.steps, args.images)
    print(f"{args.impl} {args.preset}: {args.steps} steps in {time.perf_counter() - t:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
