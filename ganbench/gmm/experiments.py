"""The two experiments: each writes its figures, CSV and TensorBoard entries and returns its summary numbers.

Both return (values, higher_is_better, reasons, protocol) for the run record; ``values`` map a metric
name to a number (or None with a reason).
"""
import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch.utils.tensorboard import SummaryWriter

from . import heatmap, plots, trajectory
from .config import GMMConfig
from .model import optimal_discriminator

log = logging.getLogger("ganbench.gmm")

Summary = Tuple[Dict[str, Optional[float]], Dict[str, bool], Dict[str, str], dict]


def heatmap_experiment(spec: GMMConfig, seed: int, device: torch.device, dtype: torch.dtype, run_dir: Path,
                       writer: SummaryWriter) -> Summary:
    """Figure 3: per method a success-probability heatmap, the grid as CSV, the off-diagonal summary."""
    axis = heatmap.grid_axis(spec)
    starts = heatmap.grid_starts(axis)
    generator = torch.Generator().manual_seed(seed)  # CPU draws: the same initialisations on any device
    discriminators = heatmap.random_discriminators(spec.inits, *spec.init_range, generator)
    results = heatmap.run_methods(spec, starts, discriminators, device, dtype)

    mask = heatmap.off_diagonal(axis)
    if not bool(mask.any()):  # a 1-point grid has only its diagonal
        mask = torch.ones_like(mask)
    values, higher, reasons, subtitles = {}, {}, {}, {}
    for method, result in results.items():
        numbers = heatmap.summary(result, mask)
        for name, value in numbers.items():
            key = f"{method}_{name}"
            values[key] = value
            higher[key] = name == "success"
            if value is None:
                reasons[key] = "not applicable: the optimal discriminator is recomputed every step"
        subtitles[method] = f"success off-diagonal {numbers['success']:.2f}"
        log.info("%s: success %.3f, mode collapse %.3f, disc. collapse %s, vanishing grad %.3f (off-diagonal)",
                 method, numbers["success"], numbers["mode_collapse"],
                 "n/a" if numbers["disc_collapse"] is None else f"{numbers['disc_collapse']:.3f}",
                 numbers["vanishing_grad"])

    grids = {m: heatmap.success_grid(r, spec.grid) for m, r in results.items()}
    for method, grid in grids.items():
        fig = plots.heatmap_figure({method: grid}, axis, subtitles)
        plots.save(fig, run_dir / f"heatmap_{method}.png")
        writer.add_figure(f"gmm/heatmap/{method}", fig, spec.iterations)
    fig = plots.heatmap_figure(grids, axis, subtitles)
    plots.save(fig, run_dir / "heatmaps.png")
    writer.add_figure("gmm/heatmaps", fig, spec.iterations)
    heatmap.write_csv(run_dir / "heatmap.csv", axis, results)
    for key, value in values.items():
        if value is not None:
            writer.add_scalar(f"metrics/{key}", value, spec.iterations)

    protocol = {
        "experiment": "gmm_heatmap", "target_mu": list(spec.target_mu), "grid": spec.grid,
        "grid_range": list(spec.grid_range), "inits": spec.inits, "init_range": list(spec.init_range),
        "iterations": spec.iterations, "lr": spec.lr, "unroll": spec.unroll, "success_tv": spec.success_tv,
        "collapsed_is_failure": spec.collapsed_is_failure, "mode_collapse_tol": spec.mode_collapse_tol,
        "vanishing_grad_tol": spec.vanishing_grad_tol, "summary_over": "off-diagonal starts (mu1 != mu2)",
        "dtype": spec.dtype, "device": str(device),
        "seconds": {m: round(r.seconds, 3) for m, r in results.items()},
        "compiled": {m: r.compiled for m, r in results.items()},
        "backend": {m: r.backend for m, r in results.items()},
    }
    return values, higher, reasons, protocol


def trajectory_experiment(spec: GMMConfig, seed: int, device: torch.device, dtype: torch.dtype, run_dir: Path,
                          writer: SummaryWriter) -> Summary:
    """Figures 1 and 2 for one start: trajectories, pdf differences with the intervals, collapse reports."""
    del seed  # deterministic: no randomness in a single exact run
    target = torch.tensor(spec.target_mu, dtype=torch.float64)
    xs = trajectory.x_range(spec)
    values, higher, reasons = {}, {}, {}
    for method in spec.methods:
        h = trajectory.run_method(method, spec, device, dtype)
        collapses = trajectory.collapse_steps(h["alive"]) if method != "optimal" else [None, None]
        for i, step in enumerate(collapses):
            if step is not None:
                log.info("%s: discriminator interval %d collapsed at step %d (stays collapsed)", method, i + 1, step)
        for t in range(0, spec.iterations + 1, spec.log_every):
            names = ("mu1", "mu2", "l1", "r1", "l2", "r2")
            numbers = list(h["mu"][t]) + list(h["ends"][t])
            for name, v in zip(names, numbers):
                if torch.isfinite(v):
                    writer.add_scalar(f"gmm/{method}/{name}", float(v), t)
            writer.add_scalar(f"gmm/{method}/tv", float(h["tv"][t]), t)

        title = (f"{plots.METHOD_TITLES.get(method, method)}: mu*={list(spec.target_mu)}, "
                 f"mu0={list(spec.init.mu)}, lr={spec.lr}" + (f", K={spec.unroll}" if method == "unrolled" else ""))
        fig = plots.trajectory_figure(h["mu"], h["ends"], h["alive"], title, collapses)
        plots.save(fig, run_dir / f"trajectory_{method}.png")
        writer.add_figure(f"gmm/trajectory/{method}", fig, spec.iterations)
        panels = [{"mu": h["mu"][t], "ends": h["ends"][t], "alive": h["alive"][t],
                   "title": f"step {t}: TV {float(h['tv'][t]):.3f}"} for t in spec.plot_steps]
        fig = plots.pdf_difference_figure(panels, target, xs, f"{plots.METHOD_TITLES.get(method, method)} dynamics")
        plots.save(fig, run_dir / f"pdf_difference_{method}.png")
        writer.add_figure(f"gmm/pdf_difference/{method}", fig, spec.iterations)

        final_collapsed = int((~h["alive"][-1]).sum()) if method != "optimal" else None
        first = min((s for s in collapses if s is not None), default=None)
        gap = float((h["mu"][-1, 0] - h["mu"][-1, 1]).abs())
        values.update({f"{method}_final_tv": float(h["tv"][-1]), f"{method}_mode_gap": gap,
                       f"{method}_collapsed_intervals": final_collapsed, f"{method}_first_collapse_step": first})
        higher.update({f"{method}_final_tv": False, f"{method}_mode_gap": True,
                       f"{method}_collapsed_intervals": False, f"{method}_first_collapse_step": True})
        if method == "optimal":
            reasons[f"{method}_collapsed_intervals"] = "not applicable: recomputed every step"
            reasons[f"{method}_first_collapse_step"] = "not applicable: recomputed every step"
        elif first is None:
            reasons[f"{method}_first_collapse_step"] = "no interval collapsed"

    # Figure 2 (a)-(c): the start, the optimal discriminator there, and discriminator-only steps.
    start = trajectory.initial_state(spec, torch.device("cpu"), torch.float64)
    optimal = optimal_discriminator(start.mu, target)
    d_only = trajectory.discriminator_only(spec, spec.d_only_steps)
    d_only_collapsed = int((~d_only.alive).sum())
    panels = [
        {"mu": start.mu, "ends": start.ends, "alive": start.alive, "title": "(a) initial discriminator"},
        {"mu": start.mu, "ends": optimal, "alive": torch.ones(2, dtype=torch.bool), "title": "(b) optimal discriminator"},
        {"mu": start.mu, "ends": d_only.ends, "alive": d_only.alive,
         "title": f"(c) after {spec.d_only_steps} discriminator steps ({d_only_collapsed} collapsed)"},
    ]
    fig = plots.pdf_difference_figure(panels, target, xs, "generator frozen at the start")
    plots.save(fig, run_dir / "discriminator_only.png")
    writer.add_figure("gmm/discriminator_only", fig, 0)
    values["d_only_collapsed_intervals"] = d_only_collapsed
    higher["d_only_collapsed_intervals"] = False
    if d_only_collapsed:
        log.info("discriminator-only steps (generator frozen): %d interval(s) collapsed", d_only_collapsed)

    protocol = {"experiment": "gmm_trajectory", "target_mu": list(spec.target_mu), "init": {
        "mu": list(spec.init.mu), "l": list(spec.init.l), "r": list(spec.init.r)}, "lr": spec.lr,
        "unroll": spec.unroll, "iterations": spec.iterations, "plot_steps": list(spec.plot_steps),
        "d_only_steps": spec.d_only_steps, "dtype": spec.dtype, "device": str(device)}
    return values, higher, reasons, protocol
