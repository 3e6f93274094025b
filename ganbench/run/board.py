"""What a run shows in TensorBoard: scalars, the fixed-z sample grid, the 2-D density plot, the config."""
import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter


def open_writer(run_dir: Path, resume_step: int) -> SummaryWriter:
    """A writer in the run directory itself; events past the checkpoint's step are purged.

    Everything up to and including ``resume_step`` was logged before the checkpoint; events after it
    belong to the lost continuation, and ``purge_step`` hides them so that no step appears twice. A run
    killed before its first checkpoint restarts from step 0: ``purge_step=0`` hides all its old events.

    Its events are written in the calling thread (``Events``): a failed write raises where it happens, a
    full disk as the one-line error naming the event file.
    """
    purge = resume_step + 1 if resume_step > 0 else 0 if any(Path(run_dir).glob("events.out.tfevents.*")) else None
    with synchronous_events():
        return SummaryWriter(log_dir=str(run_dir), purge_step=purge)


class Events:
    """Stands in for TensorBoard's ``_AsyncWriter`` (same constructor and write/flush/close): each event is
    written to the event file at once, in the calling thread.

    TensorBoard's own writer hands events to a background thread. When a write fails there (a full disk),
    the thread dies printing its traceback to stderr, and the error reaches the training thread only at a
    later add or flush, or never (close does not check). Events are small and are written at log, sample
    and evaluation steps only, so writing them in the training loop's thread costs little.
    """

    def __init__(self, record_writer: Any, max_queue_size: int = 10, flush_secs: int = 120):
        self._writer = record_writer
        self._closed = False
        name = getattr(getattr(record_writer, "_writer", None), "filename", None)  # the GFile's path, as bytes
        self.path = Path(os.fsdecode(name)) if name else Path("<TensorBoard event file>")

    def _guarded(self, action: Any, *args: Any) -> None:
        from .rundir import disk_full

        try:
            action(*args)
        except Exception as ex:  # noqa: BLE001 - a full disk becomes the one line; anything else is re-raised
            full = disk_full(ex, self.path, "the events written before were kept")
            if full is not None:
                raise full from None
            raise

    def write(self, data: bytes) -> None:
        if self._closed:
            raise OSError("Writer is closed")
        self._guarded(self._writer.write, data)

    def flush(self) -> None:
        if self._closed:
            raise OSError("Writer is closed")
        self._guarded(self._writer.flush)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._guarded(self._writer.flush)
            self._guarded(self._writer.close)


_PATCHING = threading.Lock()


@contextlib.contextmanager
def synchronous_events() -> Iterator[None]:
    """SummaryWriters created in this block write their events with ``Events``. TensorBoard builds its
    event writer inside the SummaryWriter's constructor, from the module's ``_AsyncWriter``, so that name
    is replaced for the constructor's duration (tests/test_board_disk_full.py checks that it still is)."""
    from tensorboard.summary.writer import event_file_writer

    with _PATCHING:
        original = event_file_writer._AsyncWriter
        event_file_writer._AsyncWriter = Events
        try:
            yield
        finally:
            event_file_writer._AsyncWriter = original


def close_writer(writer: SummaryWriter) -> Optional[BaseException]:
    """Close ``writer``; returns the error instead of raising it (a run that is already failing reports
    its first error, not the writer's)."""
    try:
        writer.close()
    except Exception as ex:  # noqa: BLE001 - handed to the caller
        return ex
    return None


def log_config(writer: SummaryWriter, cfg: DictConfig, step: int) -> None:
    text = OmegaConf.to_yaml(cfg, resolve=True)
    # Markdown code block: TensorBoard's text plugin renders markdown.
    writer.add_text("config", "```\n" + text + "\n```", step)


def log_architecture(writer: SummaryWriter, description: Dict, step: int) -> None:
    """The networks the run trains (``ganbench.archs.describe``: each side's family and keys, BogoNet's draw)."""
    text = OmegaConf.to_yaml(OmegaConf.create(description))
    writer.add_text("architecture", "```\n" + text + "\n```", step)


def log_scalars(writer: SummaryWriter, values: Dict[str, float], step: int) -> None:
    for tag, value in values.items():
        writer.add_scalar(tag, value, step)


@torch.no_grad()
def log_image_grid(writer: SummaryWriter, G: nn.Module, z: Tensor, step: int, tag: str = "images/samples",
                   png: Optional[Path] = None) -> None:
    """The fixed-z samples as one grid (torchvision.utils.make_grid), generator in eval mode; with ``png``,
    also written there as a PNG file (atomically: the previous grid or the new one, never a torn file)."""
    import os

    from torchvision.utils import make_grid, save_image

    was_training = G.training
    G.eval()
    images = G(z).float().clamp(-1, 1).cpu()
    G.train(was_training)
    grid = make_grid(images, nrow=int(len(images) ** 0.5), normalize=True, value_range=(-1, 1))
    writer.add_image(tag, grid, step)
    if png is not None:
        from .rundir import guarded_write

        tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp")
        guarded_write(tmp, lambda f: save_image(grid, f, format="png"))
        os.replace(tmp, png)


@torch.no_grad()
def density_figure(G: nn.Module, D: Optional[nn.Module], z: Tensor, real: Tensor, bounds: Optional[float] = None):
    """Real vs generated points over the level sets of D (the DRAGAN paper's Figures 4 and 13).

    Orange: real samples; green: generated samples; background: D(x), yellow high, purple low. With
    ``D=None`` (a packing D judges m points at once and has no level sets over the plane) only the points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G_training = G.training
    G.eval()
    fake = G(z).float().cpu()
    G.train(G_training)
    real = real.float().cpu()
    if bounds is None:
        bounds = float(real.abs().max()) * 1.4 + 0.1
    fig, ax = plt.subplots(figsize=(5, 5), dpi=90)
    if D is not None:
        D_training = D.training
        D.eval()
        n = 160
        axis = torch.linspace(-bounds, bounds, n)
        xx, yy = torch.meshgrid(axis, axis, indexing="xy")
        grid = torch.stack([xx.flatten(), yy.flatten()], 1)
        device = next(D.parameters()).device
        # A D whose output depends on the rest of its batch (minibatch discrimination) sees the grid in
        # training-sized batches; its pairwise terms would also need O(batch²) memory.
        chunk = 256 if any(getattr(m, "couples_batch", False) for m in D.modules()) else 8192
        values = torch.cat([D(part.to(device)).float().cpu() for part in grid.split(chunk)]).view(n, n)
        D.train(D_training)
        ax.contourf(xx.numpy(), yy.numpy(), values.numpy(), levels=20, cmap="viridis")
    ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", alpha=0.6, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="tab:green", alpha=0.6, label="generated")
    ax.set_xlim(-bounds, bounds)
    ax.set_ylim(-bounds, bounds)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def log_density(writer: SummaryWriter, G: nn.Module, D: Optional[nn.Module], z: Tensor, real: Tensor, step: int,
                tag: str = "images/density") -> None:
    import matplotlib.pyplot as plt

    fig = density_figure(G, D, z, real)
    writer.add_figure(tag, fig, step, close=True)
    plt.close(fig)
