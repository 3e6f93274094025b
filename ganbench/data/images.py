"""Image datasets: torchvision CIFAR-10 / MNIST and ``folder`` (a directory or archive of images).

Each source is decoded once into a uint8 (N, C, H, W) tensor, cached on disk (see cache.py), and
kept on the training device when it fits, so ``sample()`` is one on-device gather + conversion.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ganbench.data import cache as cache_mod
from ganbench.data import options
from ganbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DEFAULT_ROOT = "~/.cache/ganbench/data"
# Fraction of free GPU memory the uint8 dataset may take under on_device=auto (the rest is for training).
_GPU_SHARE = 0.25
_DOWNLOAD_TIMEOUT_S = 60


class ImageDataset:
    """uint8 images sampled uniformly with replacement: ``sample(B)`` = images[randint(N, (B,))]
    mapped to float32 in [-1, 1] (x/127.5 - 1) on the device."""

    kind = "image"

    def __init__(self, name: str, images: torch.Tensor, device: torch.device, on_device,
                 split: str | None, load_split: Callable[[str], torch.Tensor] | None = None,
                 labels: torch.Tensor | None = None, source: str | os.PathLike | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 (N,C,H,W) images, got {images.dtype} {tuple(images.shape)}")
        self.name = name
        self.device = torch.device(device)
        self.split = split
        self.shape = tuple(images.shape[1:])
        self.num_images = images.shape[0]
        # One line that says what is trained on: a wrong split (train+test together) shows up as a count.
        log.info("%s", describe(name, self.num_images, split, source, self.shape))
        self.images = images  # CPU copy, returned by real_uint8 for the training split
        self.labels = labels
        self.data = place(images, self.device, on_device)
        self._load_split = load_split
        self._other_splits: dict[str, torch.Tensor] = {}

    @property
    def sample_device(self) -> torch.device:
        """The device that holds the images and draws the indices (a generator given to ``sample`` lives there)."""
        return self.data.device

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch_size, C, H, W) float32 in [-1, 1] on the device; indices from ``generator``, by default the
        global RNG of the device that holds the images (the training device unless on_device kept them on
        the CPU)."""
        idx = torch.randint(self.num_images, (batch_size,), device=self.data.device, generator=generator)
        return gather_to(self.data, idx, self.device).to(torch.float32).div_(127.5).sub_(1.0)

    def real_uint8(self, split: str | None = None) -> torch.Tensor:
        """uint8 (N, C, H, W) CPU tensor of a whole split ("train" | "test"); None = the split sampled from."""
        if split is None or split == self.split:
            return self.images
        if split not in self._other_splits:
            if self._load_split is None:
                raise DataError(f"dataset {self.name} has no '{split}' split")
            self._other_splits[split] = self._load_split(split)
        return self._other_splits[split]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={self.num_images}, "
                f"shape={self.shape}, device={self.device}, data_on={self.data.device})")


def describe(name: str, num_images: int, split: str | None, source, shape, what: str = "images") -> str:
    """"dataset <name>: <N> <what> (split=<split>) from <source>, HxWxC", e.g.
    "dataset folder: 50000 images (split=train) from /data/cifar10.tar.gz, 32x32x3"."""
    c, h, w = shape
    which = f"split={split}" if split is not None else "split=null: every image, any train/ and test/ sub-folders together"
    where = f" from {source}" if source is not None else ""
    return f"dataset {name}: {num_images} {what} ({which}){where}, {h}x{w}x{c}"


def gather_to(data: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``data[idx]`` on ``device`` (idx: any shape of row indices, on data's device). When the data stay on the
    host for a CUDA run, the rows are gathered into pinned memory, so the copy to the GPU does not wait for the
    host (from pageable memory a ``non_blocking`` copy is synchronous); PyTorch's pinned allocator keeps a
    buffer until its copy has run, so a buffer per batch is safe and cached."""
    if data.device == device:
        return data[idx]
    if device.type != "cuda":
        return data[idx].to(device)
    rows = data.shape[1:]
    out = torch.empty(tuple(idx.shape) + tuple(rows), dtype=data.dtype, pin_memory=True)
    torch.index_select(data, 0, idx.reshape(-1), out=out.view(-1, *rows))
    return out.to(device, non_blocking=True)


def place(images: torch.Tensor, device: torch.device, on_device: str) -> torch.Tensor:
    """Put the uint8 images on ``device`` if on_device is "true", or under "auto" when they take at most
    a quarter of the free GPU memory; otherwise keep them on the CPU (batches are then copied over)."""
    if device.type == "cpu" or on_device == "false":
        return images
    if on_device == "auto" and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.nbytes > _GPU_SHARE * free:
            log.info("keeping %.0f MB of images on the CPU (free GPU memory %.0f MB)", images.nbytes / 2**20, free / 2**20)
            return images
    return images.to(device)


# ------------------------------------------------------------------ config helpers

def data_root(cfg) -> Path:
    """dataset.root with ~ expanded (default ~/.cache/ganbench/data)."""
    return Path(os.path.expanduser(str(cfg.get("root") or DEFAULT_ROOT))).absolute()


def _cache_file(cfg, label: str, parts: dict) -> Path | None:
    return cache_mod.cache_path(data_root(cfg), label, parts) if cfg.get("cache", True) else None


def to_format(images: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """uint8 (N,C,h,w) -> uint8 (N,channels,resolution,resolution): RGB->L with PIL's luma weights
    (299, 587, 114)/1000, L->RGB by repetition, then shorter side resized (bicubic, antialiased) and
    center-cropped."""
    out = []
    for x in images.split(4096):  # bounded float32 working memory
        if x.shape[1] != channels:
            if channels == 1:
                w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                x = (x.float() * w).sum(1, keepdim=True).round().clamp_(0, 255).to(torch.uint8)
            else:
                x = x.expand(-1, 3, -1, -1)
        h, w_ = x.shape[-2:]
        if min(h, w_) != resolution:
            s = resolution / min(h, w_)
            size = (max(resolution, round(h * s)), max(resolution, round(w_ * s)))
            x = F.interpolate(x.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
            h, w_ = size
        if (h, w_) != (resolution, resolution):
            top, left = (h - resolution) // 2, (w_ - resolution) // 2
            x = x[:, :, top:top + resolution, left:left + resolution]
        out.append(x.contiguous())
    return torch.cat(out)


# ------------------------------------------------------------------ torchvision datasets

@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # urllib has no timeout by default: behind a firewall that drops packets a download would hang.
    old = socket.getdefaulttimeout()
    if old is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad_file(title: str, files: list[tuple[Path, Callable[[Path], None]]]) -> str | None:
    """One line naming the first of ``files`` that exists and fails its check (``check(path)`` raises), or None."""
    from ganbench.errors import one_line_error

    for path, check in files:
        if not path.is_file():
            continue
        try:
            check(path)
        except Exception as e:  # noqa: BLE001 - any failure of the check: the file is what is wrong
            return (f"{title} file {path} is refused or corrupt ({_one_line(one_line_error(e))}); delete it so that "
                    f"torchvision reads or downloads it again")
    return None


def _md5(md5: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        from torchvision.datasets.utils import check_integrity

        if not check_integrity(str(path), md5):
            raise ValueError(f"its md5 is not torchvision's {md5}")
    return check


def _weights_only(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's pickle-protocol notes
        torch.load(path, map_location="cpu", weights_only=True)


def _open_torchvision(factory: Callable[[bool], object], failure: Callable[[BaseException], str], title: str = "",
                      files: list[tuple[Path, Callable[[Path], None]]] = ()):
    """factory(download) -> torchvision dataset; try the files on disk first, then torchvision's download.

    ``files``: the local files torchvision reads, each with a check; when reading fails, the first that fails its
    check is named (a file refused by weights_only=True at once: a download would not replace it)."""
    try:
        return factory(False)
    except pickle.UnpicklingError:  # MNIST's legacy processed/*.pt, refused by torch.load(weights_only=True)
        bad = _bad_file(title, files)
        if bad:
            raise DataError(bad) from None
    except Exception:  # noqa: BLE001 - not there or corrupt: let torchvision download it
        pass
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            return factory(True)
    except Exception as e:  # URLError, RuntimeError (md5/mirrors), OSError (permissions, disk), a corrupt file
        raise DataError(_bad_file(title, files) or failure(e)) from None


def _mnist_split_class():
    from torchvision.datasets import MNIST

    class MNISTSplit(MNIST):
        """torchvision's MNIST restricted to one split's two files, so that the test split loads (and
        downloads) without the train files; same folder layout <root>/MNIST/raw."""

        def __init__(self, root, train: bool, download: bool):
            prefix = "train" if train else "t10k"
            self.resources = [r for r in MNIST.resources if r[0].startswith(prefix)]
            super().__init__(root, train=train, download=download)

        @property
        def raw_folder(self) -> str:
            return os.path.join(self.root, "MNIST", "raw")

        @property
        def processed_folder(self) -> str:
            return os.path.join(self.root, "MNIST", "processed")

    return MNISTSplit


def _folder_hint(train_split: str | None) -> str:
    """The offline alternative: an image archive with train/ and test/ sub-folders. It names the split,
    because dataset=folder without dataset.split trains on every image, test images included."""
    if train_split is None:  # stacked_mnist: a folder of images is not the same experiment
        return ""
    return (f", or use dataset=folder dataset.path=/path/to/images.tar.gz dataset.split={train_split} "
            f"(an archive with train/ and test/ sub-folders)")


def _read_cifar10(root: Path, split: str, train_split: str | None = "train") -> dict:
    from torchvision.datasets import CIFAR10

    def failure(e):
        return (f"cannot download CIFAR-10 into {root} ({_one_line(e)}; no network?): place "
                f"cifar-10-python.tar.gz there, set GANBENCH_DATA{_folder_hint(train_split)}")

    from torchvision.datasets.cifar import CIFAR10 as known  # its file names and md5s

    batches = root / known.base_folder
    files = [(root / known.filename, _md5(known.tgz_md5))] + [
        (batches / name, _md5(md5)) for name, md5 in known.train_list + known.test_list]
    files.append((batches / known.meta["filename"], _md5(known.meta["md5"])))
    ds = _open_torchvision(lambda download: CIFAR10(str(root), train=split == "train", download=download), failure,
                           "CIFAR-10", files)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return {"images": images, "labels": torch.as_tensor(ds.targets, dtype=torch.int64)}


def _read_mnist(root: Path, split: str, train_split: str | None = "train") -> dict:
    cls = _mnist_split_class()
    prefix = "train" if split == "train" else "t10k"

    def failure(e):
        return (f"cannot download MNIST ({split}) into {root / 'MNIST' / 'raw'} ({_one_line(e)}; no network?): "
                f"place {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz there, set "
                f"GANBENCH_DATA{_folder_hint(train_split)}")

    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw, md5 = root / "MNIST" / "raw", dict(cls.resources)
    files = [(root / "MNIST" / "processed" / name, _weights_only) for name in ("training.pt", "test.pt")]
    for name, read in ((f"{prefix}-images-idx3-ubyte", read_image_file), (f"{prefix}-labels-idx1-ubyte", read_label_file)):
        files += [(raw / f"{name}.gz", _md5(md5[f"{name}.gz"])), (raw / name, lambda p, read=read: read(str(p)))]
    ds = _open_torchvision(lambda download: cls(str(root), train=split == "train", download=download), failure,
                           "MNIST", files)
    return {"images": ds.data.unsqueeze(1).contiguous(), "labels": ds.targets.to(torch.int64)}


_TORCHVISION = {"cifar10": ("CIFAR-10", _read_cifar10), "mnist": ("MNIST", _read_mnist)}


def load_torchvision(cfg, name: str, split: str, resolution: int, channels: int) -> dict:
    """{"images": uint8 (N,C,R,R), "labels": int64 (N,)} of a torchvision dataset split, via the cache."""
    title, reader = _TORCHVISION[name]
    root = data_root(cfg)
    parts = {"source": f"torchvision:{name}", "split": split, "resolution": resolution, "channels": channels}
    label = f"{name}-{split}-{resolution}px-{channels}ch"

    # The hint names the split the run trains on (also when the metrics' test split is what failed);
    # stacked_mnist gets no folder hint.
    train_split = options.split(cfg, "train") if cfg.get("name") in _TORCHVISION else None

    def build():
        raw = reader(root, split, train_split)
        return {"images": to_format(raw["images"], resolution, channels), "labels": raw["labels"]}

    return cache_mod.load_or_build(_cache_file(cfg, label, parts), build, f"{title} {split}")


def options_torchvision(cfg, default_channels: int) -> dict:
    return {"split": options.split(cfg, "train"),
            "resolution": options.integer(cfg, "resolution", 32),
            "channels": options.integer(cfg, "channels", default_channels, allowed=(1, 3)),
            "on_device": options.on_device(cfg)}


def options_cifar10(cfg) -> dict:
    return options_torchvision(cfg, 3)


def options_mnist(cfg) -> dict:
    return options_torchvision(cfg, 1)


def _build_torchvision(cfg, device, name: str, o: dict):
    res, ch = o["resolution"], o["channels"]
    data = load_torchvision(cfg, name, o["split"], res, ch)
    return ImageDataset(name, data["images"], device, o["on_device"], o["split"],
                        lambda s: load_torchvision(cfg, name, s, res, ch)["images"], labels=data["labels"],
                        source=data_root(cfg))


def build_cifar10(cfg, device, seed=0):
    return _build_torchvision(cfg, device, "cifar10", options_cifar10(cfg))


def build_mnist(cfg, device, seed=0):
    return _build_torchvision(cfg, device, "mnist", options_mnist(cfg))


# ------------------------------------------------------------------ folder / archive

def load_folder(cfg, path: Path, split: str | None, resolution: int, channels: int,
                workers: int | None = None) -> dict:
    """{"images": uint8 (N,C,R,R), "names": sorted member names} of a directory or archive, via the cache."""
    from ganbench.data import archive

    parts = {"source": "folder", **cache_mod.file_identity(path), "split": split,
             "resolution": resolution, "channels": channels}
    stem = path.name.split(".")[0] or "images"
    label = f"folder-{stem}-{split or 'all'}-{resolution}px-{channels}ch"

    def build():
        names, arr = archive.decode_source(path, split, resolution, channels, workers)
        return {"images": torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), "names": names}

    return cache_mod.load_or_build(_cache_file(cfg, label, parts), build, f"images of {path} (split={split})")


def options_folder(cfg) -> dict:
    raw_path = cfg.get("path")
    if not raw_path:
        raise ConfigError("dataset=folder needs dataset.path=<a directory or .zip/.tar/.tar.gz archive of images>")
    path = Path(os.path.expanduser(str(raw_path))).absolute()
    if not path.exists():
        raise DataError(f"dataset.path={path} does not exist")
    return {"path": path,
            "split": options.split(cfg, None, any_name=True),
            "resolution": options.integer(cfg, "resolution", 32),
            "channels": options.integer(cfg, "channels", 3, allowed=(1, 3)),
            "on_device": options.on_device(cfg),
            "workers": options.workers(cfg)}


def build_folder(cfg, device, seed=0):
    from ganbench.data.archive import NoImagesError

    o = options_folder(cfg)
    path, split = o["path"], o["split"]
    fmt = (o["resolution"], o["channels"], o["workers"])
    try:
        data = load_folder(cfg, path, split, *fmt)
    except NoImagesError as e:
        if split is None:
            raise
        # The key the user set, and the splits this source does offer (e.folders).
        raise NoImagesError(f"dataset.split={split}: {e}" + ("; or dataset.split=null for every image"
                                                              if e.folders is not None else ""), e.folders) from None

    def load_split(other: str) -> torch.Tensor:
        try:
            return load_folder(cfg, path, other, *fmt)["images"]
        except NoImagesError:
            # A folder without train/test sub-folders is all training data.
            if split is None and other == "train":
                return data["images"]
            raise

    return ImageDataset("folder", data["images"], device, o["on_device"], split, load_split, source=path)
