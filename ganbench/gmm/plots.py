"""Figures of the GMM-GAN lab in the paper's forms (matplotlib, Agg backend)."""
import math
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .model import pdf_difference  # noqa: E402

METHOD_TITLES = {"first_order": "first order", "unrolled": "unrolled", "optimal": "optimal discriminator",
                 "alternating": "alternating"}


def heatmap_figure(grids: Dict[str, Tensor], axis: Tensor, subtitles: Optional[Dict[str, str]] = None):
    """Figure 3: success probability over the start μ̂⁽⁰⁾, one panel per method (μ̂₁ across, μ̂₂ up)."""
    n = len(grids)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), dpi=100, squeeze=False)
    low, high = float(axis[0]), float(axis[-1])
    half = (high - low) / (2 * max(len(axis) - 1, 1))
    image = None
    for k, (ax, (method, grid)) in enumerate(zip(axes[0], grids.items())):
        # grid[i, j] is the start (axis[i], axis[j]): μ̂₁ = axis[i] is the x coordinate, hence the transpose.
        image = ax.imshow(grid.T.numpy(), origin="lower", extent=(low - half, high + half, low - half, high + half),
                          vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        title = METHOD_TITLES.get(method, method)
        if subtitles and method in subtitles:
            title += "\n" + subtitles[method]
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(r"initial $\hat\mu_1$")
        if k == 0:
            ax.set_ylabel(r"initial $\hat\mu_2$")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.85, label="P(success)")
    return fig


def trajectory_figure(mu: Tensor, ends: Tensor, alive: Tensor, title: str, collapse_steps: Sequence[Optional[int]]):
    """Figure 1: the generator means (solid) and the discriminator endpoints (dotted) against iterations."""
    steps = torch.arange(mu.shape[0]).numpy()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for j, color in enumerate(("tab:blue", "tab:orange")):
        ax.plot(steps, mu[:, j].numpy(), color=color, lw=2, label=rf"$\hat\mu_{j + 1}$")
    names = (r"$\ell_1$", r"$r_1$", r"$\ell_2$", r"$r_2$")
    colors = ("tab:green", "tab:green", "tab:red", "tab:red")
    for e in range(4):
        values = ends[:, e].clamp(-50, 50).numpy()  # the optimal discriminator's ±inf ends
        ax.plot(steps, values, ls=":", color=colors[e], lw=1.4, label=names[e])
    for i, step in enumerate(collapse_steps):
        if step is not None:
            ax.axvline(step, color=colors[2 * i], lw=0.8, alpha=0.6)
            ax.annotate(f"interval {i + 1} collapses", (step, 0.98 - 0.07 * i), xycoords=("data", "axes fraction"),
                        fontsize=8, color=colors[2 * i], ha="left", va="top")
    finite = torch.cat([mu.flatten(), ends[torch.isfinite(ends)].flatten()])
    ax.set_ylim(float(finite.min()) - 0.5, float(finite.max()) + 0.5)
    ax.set_xlabel("iteration")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    return fig


def pdf_difference_panel(ax, mu: Tensor, ends: Tensor, alive: Tensor, target: Tensor, title: str,
                         x_range: Sequence[float]) -> None:
    """Figure 2 panel: F = G_μ* − G_μ with the discriminator's intervals shaded (collapsed ones marked)."""
    x = torch.linspace(x_range[0], x_range[1], 800, dtype=torch.float64)
    f = pdf_difference(x, mu.double(), target.double())
    ax.plot(x.numpy(), f.numpy(), color="black", lw=1.2)
    ax.axhline(0.0, color="gray", lw=0.6)
    for i in range(2):
        left, right = float(ends[2 * i]), float(ends[2 * i + 1])
        if bool(alive[i]) and right > left:
            ax.axvspan(max(left, x_range[0]), min(right, x_range[1]), color="tab:blue", alpha=0.25)
        elif not bool(alive[i]):
            ax.axvline(left, color="tab:red", ls="--", lw=1.0)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(*x_range)


def pdf_difference_figure(panels: List[dict], target: Tensor, x_range: Sequence[float], suptitle: str):
    """A row (wrapped) of Figure-2 panels; each panel dict has mu, ends, alive, title."""
    n = len(panels)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), dpi=100, squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        pdf_difference_panel(ax, panel["mu"], panel["ends"], panel["alive"], target, panel["title"], x_range)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(suptitle + "   (shaded: discriminator intervals; red dashed: collapsed interval)", fontsize=9)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, bbox_inches="tight")
