"""Stacked-MNIST mode metrics and the MNIST digit classifier they rely on.

A Stacked-MNIST sample is three MNIST digits in the R, G, B channels, so there are 10³ = 1000 modes. A
sample's mode is the triple of the classifier's per-channel argmax; we report the number of distinct modes
hit and KL(p̂ ‖ uniform_1000) (Metz et al. 2017, Srivastava et al. 2017).

The classifier is a small CNN trained by ``train_classifier`` (``scripts/train_mnist_classifier.py``, or on
first use by the evaluator) and cached as one file with its metadata: which split it was trained and tested
on and its test accuracy. Where only the MNIST test split exists (as in this repository's CI data), it
trains on a seeded random 8,000 of the test digits and reports accuracy on the other 2,000.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ganbench.metrics.toy import kl_to_uniform

log = logging.getLogger(__name__)

NUM_MODES = 1000
_MEAN, _STD = 0.1307, 0.3081  # MNIST pixel statistics, for input normalisation
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DigitClassifier(nn.Module):
    """Four 3×3 conv layers (BN, ReLU, two max-pools) and a two-layer head; input (B, 1, 28, 28) in [0, 1]."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.net = nn.Sequential(
            *block(1, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(2 * w * 49, 128), nn.ReLU(inplace=True), nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - _MEAN) / _STD)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: magic, dims as big-endian int32, then uint8 data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "mnist" / "raw", root / "MNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(roots: list[str | os.PathLike], download_root: str | os.PathLike | None = None
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """MNIST splits found under any of ``roots`` (files ``{train,t10k}-*-ubyte[.gz]`` in ``root``,
    ``root/mnist/raw``, ``root/MNIST/raw`` or ``root/raw``): ``{split: (uint8 (N, 28, 28), int64 (N,))}``.

    When no root holds the train split and ``download_root`` is given, torchvision downloads both splits
    there first; a failed download is logged and whatever was found is returned.
    """
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def scan(root):
        for split, (img, lab) in _FILES.items():
            if split in found:
                continue
            pi, pl = _find_idx(Path(root), img), _find_idx(Path(root), lab)
            if pi and pl:
                found[split] = (torch.from_numpy(_read_idx(pi).copy()), torch.from_numpy(_read_idx(pl).astype(np.int64)))

    for root in roots:
        if root is not None and Path(os.path.expanduser(str(root))).is_dir():
            scan(Path(os.path.expanduser(str(root))))
    if "train" not in found and download_root is not None:
        try:
            import torchvision

            for train in (True, False):
                torchvision.datasets.MNIST(str(download_root), train=train, download=True)
            scan(Path(download_root))
        except Exception as err:  # noqa: BLE001 - offline machines only have what they have
            log.info("MNIST download into %s failed (%s: %s)", download_root, type(err).__name__, err)
    return found


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation ±10°, scale 0.9–1.1 and shift ±2 px, so the classifier also reads GAN digits that
    are slightly off-centre or were resized to 32×32 and back."""
    b = len(x)
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(b, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (2 / 14)  # affine_grid units: 14 px = 1.0
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device, batch: int = 1000) -> float:
    """Fraction of uint8 (N, 28, 28) digits classified correctly."""
    model.eval()
    correct = 0
    for s in range(0, len(images), batch):
        x = images[s:s + batch].to(device).unsqueeze(1).float() / 255
        correct += int((model(x).argmax(1).cpu() == labels[s:s + batch]).sum())
    return correct / len(images)


def train_classifier(data: dict[str, tuple[torch.Tensor, torch.Tensor]], device="cpu", epochs: int = 10,
                     seed: int = 0, holdout: int = 2000, batch_size: int = 128, width: int = 16
                     ) -> tuple[DigitClassifier, dict]:
    """Train a DigitClassifier: on the train split tested on the test split when both exist, otherwise on a
    seeded random part of the test split tested on the ``holdout`` others. Returns (model, metadata)."""
    if "test" not in data:
        raise FileNotFoundError("no MNIST split found")
    gen = torch.Generator().manual_seed(seed)
    if "train" in data:
        (x_tr, y_tr), (x_te, y_te) = data["train"], data["test"]
        split = {"train": "mnist train (60000)", "test": "mnist test (10000)"}
    else:
        x, y = data["test"]
        perm = torch.randperm(len(x), generator=gen)
        te, tr = perm[:holdout], perm[holdout:]
        (x_tr, y_tr), (x_te, y_te) = (x[tr], y[tr]), (x[te], y[te])
        split = {"train": f"mnist test, random {len(tr)} (randperm seed {seed}, indices [{holdout}:])",
                 "test": f"mnist test, the other {holdout} held out (indices [:{holdout}])"}
    torch.manual_seed(seed)
    model = DigitClassifier(width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x_tr) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for s in range(0, len(x_tr), batch_size):
            idx = order[s:s + batch_size]
            xb = _augment(x_tr[idx].unsqueeze(1).float() / 255, gen).to(device)
            loss = F.cross_entropy(model(xb), y_tr[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        log.info("mnist classifier epoch %d/%d loss %.4f", epoch + 1, epochs, loss.item())
    acc = accuracy(model, x_te, y_te, device)
    meta = {"arch": f"DigitClassifier(width={width})", "width": width, "train_split": split["train"], "test_split": split["test"],
            "test_accuracy": acc, "epochs": epochs, "seed": seed, "train_seconds": round(time.time() - t0, 1),
            "torch": str(torch.__version__)}
    return model.cpu().eval(), meta


def save_classifier(model: DigitClassifier, meta: dict, path: str | os.PathLike) -> None:
    """Write {state_dict, meta} atomically (temporary file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    # Plain JSON types only, so that load_classifier can use torch.load(weights_only=True).
    meta = json.loads(json.dumps(meta, default=str))
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    os.replace(tmp, path)


def load_classifier(path: str | os.PathLike, device="cpu") -> tuple[DigitClassifier, dict]:
    """(model in eval mode on ``device``, metadata) from a file written by save_classifier."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    width = int(blob["meta"].get("width", 16))
    model = DigitClassifier(width)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval().requires_grad_(False), blob["meta"]


@torch.no_grad()
def classify_channels(model: nn.Module, images_uint8: torch.Tensor) -> torch.Tensor:
    """Per-channel digit of uint8 (B, C, H, W) images: (B, C) int64. Channels other than 28×28 are resized
    (bilinear, antialiased) to the classifier's 28×28."""
    b, c, h, w = images_uint8.shape
    x = images_uint8.reshape(b * c, 1, h, w).float() / 255
    if (h, w) != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return model(x).argmax(1).reshape(b, c)


def stacked_mode_metrics(digits: torch.Tensor) -> dict[str, float]:
    """From (N, 3) per-channel digits: ``stacked_modes`` = number of distinct triples (of 1000) and
    ``stacked_kl`` = KL(p̂ ‖ uniform_1000), p̂ the histogram of mode = 100·d₀ + 10·d₁ + d₂."""
    digits = digits.detach().cpu().long()
    modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
    counts = torch.bincount(modes, minlength=NUM_MODES)
    return {"stacked_modes": float((counts > 0).sum()), "stacked_kl": kl_to_uniform(counts)}
