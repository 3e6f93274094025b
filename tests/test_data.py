"""Tests of ganbench.data: toy distributions, image folders/archives, the decode cache,
torchvision MNIST/CIFAR-10 (shared files or a failing download), stacked MNIST."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ganbench.data import build_dataset
from ganbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "dataset"
SHARED = REPO.parent / "shared" / "data"
CPU = torch.device("cpu")


def load_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


# ---------------------------------------------------------------- toy data

@pytest.mark.parametrize("name,modes,std", [("ring8", 8, 0.02), ("grid25", 25, 0.05)])
def test_mixture_matches_definition(name, modes, std):
    ds = build_dataset(load_cfg(name), CPU, seed=0)
    assert ds.kind == "points" and ds.shape == (2,) and ds.name == name
    assert ds.std == pytest.approx(std)
    assert ds.centers.shape == (modes, 2)
    if name == "ring8":
        i = torch.arange(8, dtype=torch.float64)
        expected = 2.0 * torch.stack([torch.cos(2 * math.pi * i / 8), torch.sin(2 * math.pi * i / 8)], 1)
    else:
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
        expected = torch.cartesian_prod(axis, axis)
    torch.testing.assert_close(ds.centers.double(), expected, atol=1e-6, rtol=0)

    torch.manual_seed(0)
    n = 20_000
    x = ds.sample(n)
    assert x.shape == (n, 2) and x.dtype == torch.float32 and x.device == CPU
    dist = torch.cdist(x.double(), ds.centers.double())
    nearest_dist, nearest = dist.min(1)
    assert nearest_dist.max() < 5 * std * math.sqrt(2)  # every point near a centre (2-D radius)
    freq = torch.bincount(nearest, minlength=modes).double() / n
    # Multinomial std of a frequency is sqrt(p(1-p)/n) ≈ 0.002 (ring) / 0.0014 (grid); allow 5σ.
    p = 1 / modes
    assert (freq - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n)
    residual = x.double() - ds.centers.double()[nearest]
    assert residual.mean(0).abs().max() < 5 * std / math.sqrt(n)
    assert residual.std(0).sub(std).abs().max() < 0.03 * std


def test_ring8_parameters_from_config():
    ds = build_dataset(load_cfg("ring8", radius=3.0, std=0.1), CPU, seed=0)
    assert ds.std == pytest.approx(0.1)
    torch.testing.assert_close(ds.centers.norm(dim=1), torch.full((8,), 3.0))


def test_swissroll_shape_and_scale():
    ds = build_dataset(load_cfg("swissroll"), CPU, seed=0)
    assert ds.centers is None and ds.std == pytest.approx(0.25 / 7.5)
    torch.manual_seed(0)
    x = ds.sample(20_000)
    assert x.shape == (20_000, 2)
    # The noise-free roll has radius t ∈ [1.5π, 4.5π] around the origin, scaled by 1/7.5.
    r = x.norm(dim=1)
    assert r.min() > 1.5 * math.pi / 7.5 - 5 * ds.std
    assert r.max() < 4.5 * math.pi / 7.5 + 5 * ds.std
    assert x.abs().max() < 2.0
    # Noise-free points lie on the spiral radius == angle parameter t (mod 2π ambiguity):
    clean = build_dataset(load_cfg("swissroll", noise=0.0, scale=1.0), CPU, seed=0).sample(1000).double()
    t = clean.norm(dim=1)
    torch.testing.assert_close(clean, torch.stack([t * t.cos(), t * t.sin()], 1), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ["ring8", "grid25", "swissroll"])
def test_toy_reproducible(name):
    ds = build_dataset(load_cfg(name), CPU, seed=0)
    torch.manual_seed(123)
    a = ds.sample(64)
    torch.manual_seed(123)
    b = ds.sample(64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    torch.testing.assert_close(ds.sample_eval(100, ga), ds.sample_eval(100, gb), rtol=0, atol=0)
    # sample_eval does not consume the global RNG
    torch.manual_seed(5)
    before = torch.get_rng_state()
    ds.sample_eval(10, torch.Generator().manual_seed(0))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["ring8", "swissroll"])
def test_toy_on_cuda(name):
    dev = torch.device("cuda")
    ds = build_dataset(load_cfg(name), dev, seed=0)
    assert ds.sample(16).device.type == "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    assert ds.sample_eval(16, g).device.type == "cuda"
    assert ds.sample_eval(16, torch.Generator().manual_seed(0), device="cuda").device.type == "cuda"


def test_toy_on_meta_device_has_no_host_sync():
    # The meta device has no data: any .item()/host sync in sample() would raise.
    for name in ["ring8", "grid25", "swissroll"]:
        x = build_dataset(load_cfg(name), torch.device("meta"), seed=0).sample(32)
        assert x.shape == (32, 2) and x.device.type == "meta"


def test_unknown_dataset_is_config_error():
    with pytest.raises(ConfigError, match="unknown dataset.name"):
        build_dataset(OmegaConf.create({"name": "nope"}), CPU, seed=0)


def test_dataset_yaml_keys_are_documented():
    for path in sorted(CONF.glob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line and not line.startswith(("#", " ")) and not line.startswith(("name:", "kind:")):
                assert lines[i - 1].startswith("#"), f"{path.name}: key without a comment: {line}"
        cfg = OmegaConf.load(path)
        assert cfg.name == path.stem and cfg.kind in ("points", "image")


# ---------------------------------------------------------------- image folders and archives

import io  # noqa: E402
import os  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ganbench.data import archive  # noqa: E402
from ganbench.errors import DataError  # noqa: E402

# (relative path, size (w, h), mode, fill value); sorted order of the wanted images is the list order
# of the non-skipped entries sorted by path.
TREE = [
    ("test/c/img2.png", (20, 64), "L", 200),
    ("train/a/img0.png", (40, 50), "RGB", (10, 20, 30)),
    ("train/b/deep/img1.jpg", (33, 31), "RGB", (128, 128, 128)),
    ("train/img3.png", (32, 32), "RGBA", (250, 5, 60, 128)),
    ("train/z.bmp", (7, 90), "RGB", (0, 255, 0)),
]
SKIPPED = [".hidden/x.png", "train/notes.txt", "__MACOSX/train/._img0.png"]


def _encode(size, mode, fill, fmt):
    buf = io.BytesIO()
    Image.new(mode, size, fill).save(buf, format=fmt)
    return buf.getvalue()


def _tree_files():
    files = {}
    for rel, size, mode, fill in TREE:
        fmt = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP"}[rel.rsplit(".", 1)[1]]
        files[rel] = _encode(size, mode, fill, fmt)
    for rel in SKIPPED:
        files[rel] = b"not an image"
    return files


def make_source(tmp_path: Path, kind: str, files=None) -> Path:
    """The test tree as a directory, .zip, .tar or .tar.gz (members in reverse order)."""
    files = _tree_files() if files is None else files
    tmp_path.mkdir(parents=True, exist_ok=True)
    names = sorted(files, reverse=True)  # archive order differs from sorted order on purpose
    if kind == "dir":
        root = tmp_path / "imgdir"
        for rel in names:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(files[rel])
        return root
    if kind == "zip":
        path = tmp_path / "imgs.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for rel in names:
                zf.writestr("top/" + rel, files[rel])
        return path
    path = tmp_path / {"tar": "imgs.tar", "tgz": "imgs.tar.gz"}[kind]
    with tarfile.open(path, "w:gz" if kind == "tgz" else "w") as tf:
        for rel in names:
            info = tarfile.TarInfo("top/" + rel)
            info.size = len(files[rel])
            tf.addfile(info, io.BytesIO(files[rel]))
    return path


def folder_cfg(path, root, **kw):
    return load_cfg("folder", path=str(path), root=str(root), decode_workers=1, **kw)


def expected_colors(split=None):
    out = []
    for rel, _, mode, fill in sorted(TREE):
        if split is not None and split not in rel.split("/")[:-1]:
            continue
        rgb = (fill,) * 3 if mode == "L" else fill[:3]
        out.append(rgb)
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("kind", ["dir", "zip", "tar", "tgz"])
def test_folder_sources_decode_sorted(tmp_path, kind):
    src = make_source(tmp_path, kind)
    ds = build_dataset(folder_cfg(src, tmp_path / "root"), CPU, seed=0)
    assert ds.kind == "image" and ds.name == "folder" and ds.shape == (3, 32, 32)
    assert ds.num_images == len(TREE)
    images = ds.real_uint8()
    assert images.dtype == torch.uint8 and images.shape == (len(TREE), 3, 32, 32)
    # Solid-colour images stay solid after resize + crop (JPEG within a few levels).
    mean_rgb = images.float().mean(dim=(2, 3))
    torch.testing.assert_close(mean_rgb, expected_colors(), atol=3, rtol=0)
    assert (images.float() - mean_rgb[:, :, None, None]).abs().max() <= 4

    torch.manual_seed(0)
    x = ds.sample(16)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    torch.manual_seed(0)
    torch.testing.assert_close(ds.sample(16), x, rtol=0, atol=0)


def test_folder_sources_agree(tmp_path):
    files = _tree_files()
    out = [build_dataset(folder_cfg(make_source(tmp_path / k, k, files), tmp_path / k / "root"), CPU, 0).real_uint8()
           for k in ("dir", "zip", "tgz")]
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_folder_split_channels_resolution(tmp_path):
    src = make_source(tmp_path, "tgz")
    ds = build_dataset(folder_cfg(src, tmp_path / "root", split="train", channels=1, resolution=16), CPU, 0)
    assert ds.shape == (1, 16, 16) and ds.num_images == 4 and ds.split == "train"
    assert ds.real_uint8("train") is ds.real_uint8()
    test = ds.real_uint8("test")
    assert test.shape == (1, 1, 16, 16) and int(test.float().mean()) == 200
    # PIL luma of (10, 20, 30): (10*299 + 20*587 + 30*114) / 1000 = 18.15
    assert abs(ds.real_uint8()[0].float().mean().item() - 18.15) < 1


def test_folder_log_states_count_split_and_source(tmp_path, caplog):
    src = make_source(tmp_path, "tgz")
    with caplog.at_level("INFO", logger="ganbench.data"):
        build_dataset(folder_cfg(src, tmp_path / "root", split="train", resolution=16), CPU, 0)
        build_dataset(folder_cfg(src, tmp_path / "root2"), CPU, 0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dataset folder:")]
    # TREE: 4 images under train/, 1 under test/; split=null takes all 5 (train and test together).
    assert lines == [f"dataset folder: 4 images (split=train) from {src}, 16x16x3",
                     f"dataset folder: 5 images (split=null: every image, any train/ and test/ sub-folders "
                     f"together) from {src}, 32x32x3"]


def test_folder_without_splits_is_all_train(tmp_path):
    files = {f"flat/{i:02d}.png": _encode((32, 32), "RGB", (i * 10, 0, 0), "PNG") for i in range(5)}
    ds = build_dataset(folder_cfg(make_source(tmp_path, "zip", files), tmp_path / "root"), CPU, 0)
    assert torch.equal(ds.real_uint8("train"), ds.real_uint8())
    assert ds.real_uint8()[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40]
    with pytest.raises(DataError, match="no images"):
        ds.real_uint8("test")


def test_center_crop_keeps_the_middle(tmp_path):
    # 64×32 image: left quarter black, middle half white, right quarter black. Shorter side is 32
    # already, so the 32×32 center crop is exactly the white middle.
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, 16:48] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    src = make_source(tmp_path, "dir", {"wide.png": buf.getvalue()})
    img = build_dataset(folder_cfg(src, tmp_path / "root"), CPU, 0).real_uint8()
    assert img.min() == 255
    # Resolution 16: resized to 32×16 then cropped to the middle 16 columns: white with soft edges.
    img16 = build_dataset(folder_cfg(src, tmp_path / "root", resolution=16), CPU, 0).real_uint8()
    assert img16.shape == (1, 3, 16, 16) and img16[..., 2:-2].min() == 255


def test_cache_created_reused_and_keyed(tmp_path, monkeypatch):
    src = make_source(tmp_path, "tgz")
    root = tmp_path / "root"
    calls = []
    real_decode = archive.decode_source

    def counting(*args, **kw):
        calls.append(args)
        return real_decode(*args, **kw)

    monkeypatch.setattr(archive, "decode_source", counting)
    first = build_dataset(folder_cfg(src, root), CPU, 0).real_uint8()
    files = sorted((root / "cache").iterdir())
    assert len(calls) == 1 and len(files) == 1 and files[0].suffix == ".pt"
    second = build_dataset(folder_cfg(src, root), CPU, 0).real_uint8()
    assert len(calls) == 1 and torch.equal(first, second)  # served from the cache, no decode
    build_dataset(folder_cfg(src, root, resolution=16), CPU, 0)
    assert len(calls) == 2 and len(list((root / "cache").iterdir())) == 2
    build_dataset(folder_cfg(src, root, split="train"), CPU, 0)
    assert len(calls) == 3
    st = src.stat()  # a modified source gets a new key
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    build_dataset(folder_cfg(src, root), CPU, 0)
    assert len(calls) == 4
    build_dataset(folder_cfg(src, root, cache=False), CPU, 0)
    assert len(calls) == 5
    names = [p.name for p in (root / "cache").iterdir()]
    assert len(names) == 4 and not [n for n in names if n.endswith(".tmp")]


def test_corrupt_cache_is_rebuilt(tmp_path):
    src = make_source(tmp_path, "zip")
    root = tmp_path / "root"
    ref = build_dataset(folder_cfg(src, root), CPU, 0).real_uint8()
    (cache_file,) = (root / "cache").iterdir()
    cache_file.write_bytes(b"truncated")
    assert torch.equal(build_dataset(folder_cfg(src, root), CPU, 0).real_uint8(), ref)


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the code a planted cache file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_cache_is_refused_without_running_code_or_unsafe_advice(tmp_path, caplog):
    """A cache file that holds more than tensors (here a pickle whose loading would create a marker) is
    rebuilt; the warning names the file and says why, without torch's advice to load it with
    weights_only=False."""
    src = make_source(tmp_path, "zip")
    root = tmp_path / "root"
    ref = build_dataset(folder_cfg(src, root), CPU, 0).real_uint8()
    (cache_file,) = (root / "cache").iterdir()
    marker = tmp_path / "MARKER"
    torch.save({"images": _Payload(marker)}, cache_file)
    with caplog.at_level("WARNING", logger="ganbench.data"):
        again = build_dataset(folder_cfg(src, root), CPU, 0).real_uint8()
    assert torch.equal(again, ref) and not marker.exists()
    (warning,) = [r.getMessage() for r in caplog.records if "unreadable cache" in r.getMessage()]
    assert str(cache_file) in warning and "refused" in warning and "io.open" in warning
    assert "weights_only=False" not in warning and "will likely succeed" not in warning and "\n" not in warning
    torch.load(cache_file, weights_only=True)  # rebuilt: a plain cache file again


def test_parallel_decode_matches_serial(tmp_path, monkeypatch):
    files = {f"d/{i:03d}.png": _encode((30 + i % 5, 40), "RGB", (i, 2 * i, 255 - i), "PNG") for i in range(130)}
    src = make_source(tmp_path, "tar", files)
    names1, serial = archive.decode_source(src, None, 32, 3, workers=1)
    monkeypatch.setattr(archive, "_CHUNK", 16)  # several tasks
    names2, parallel = archive.decode_source(src, None, 32, 3, workers=2)
    assert names1 == names2 == sorted(names1)
    assert np.array_equal(serial, parallel)
    files["d/zzz.png"] = b"junk"  # an error inside a worker comes back as one DataError line
    bad = make_source(tmp_path / "bad", "tar", files)
    with pytest.raises(DataError, match=r"cannot decode image 'top/d/zzz.png': not a recognised image format \(in "):
        archive.decode_source(bad, None, 32, 3, workers=2)


def test_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="dataset.path"):
        build_dataset(load_cfg("folder", root=str(tmp_path)), CPU, 0)
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(folder_cfg(tmp_path / "missing.tar.gz", tmp_path), CPU, 0)
    bad = make_source(tmp_path, "zip", {"a/ok.png": _encode((8, 8), "RGB", (1, 2, 3), "PNG"), "a/bad.png": b"junk"})
    with pytest.raises(DataError, match="cannot decode image 'top/a/bad.png'") as info:
        build_dataset(folder_cfg(bad, tmp_path / "root"), CPU, 0)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="no images"):
        build_dataset(folder_cfg(make_source(tmp_path / "e", "dir", {"x.txt": b""}), tmp_path / "root"), CPU, 0)
    with pytest.raises(ConfigError, match="channels"):
        build_dataset(folder_cfg(bad, tmp_path / "root", channels=2), CPU, 0)


def test_tar_made_with_dash_C_dot_is_read(tmp_path):
    """``tar -C dir .`` names every member ``./train/...``: the leading ``.`` is no hidden folder."""
    tree = make_source(tmp_path, "dir")
    tgz = tmp_path / "dot.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tree, arcname=".")  # what tar -C <tree> -czf dot.tar.gz . writes
    with tarfile.open(tgz) as tf:
        assert all(n == "." or n.startswith("./") for n in tf.getnames())
    names, arr = archive.decode_source(tgz, None, 32, 3, workers=1)
    assert names == ["./" + rel for rel, *_ in sorted(TREE)]  # hidden files and __MACOSX still skipped
    assert np.array_equal(arr, archive.decode_source(tree, None, 32, 3, workers=1)[1])
    ds = build_dataset(folder_cfg(tgz, tmp_path / "root", split="train"), CPU, 0)
    assert ds.num_images == 4
    assert archive.wanted("./a.png", None) and not archive.wanted("./.hidden/a.png", None)


@pytest.mark.parametrize("kind", ["dir", "zip", "tgz"])
def test_unknown_folder_split_names_the_key_and_the_splits(tmp_path, kind):
    """The zip and tgz put every image under top/ (the shared folder is skipped); hidden folders and
    __MACOSX hold no split."""
    src = make_source(tmp_path, kind)
    with pytest.raises(DataError) as info:
        build_dataset(folder_cfg(src, tmp_path / "root", split="nosuch"), CPU, 0)
    assert str(info.value) == (f"dataset.split=nosuch: no images under a 'nosuch' sub-folder of {src}; its splits "
                               "(top-level folders with images): test, train; or dataset.split=null for every image")
    assert not (tmp_path / "root" / "cache").exists()


def test_unknown_split_of_a_folder_without_sub_folders(tmp_path):
    flat = make_source(tmp_path, "dir", {"a.png": _encode((8, 8), "RGB", (1, 2, 3), "PNG")})
    with pytest.raises(DataError, match=r"^dataset.split=train: .* it has no image sub-folders; or dataset.split=null"):
        build_dataset(folder_cfg(flat, tmp_path / "root", split="train"), CPU, 0)
    empty = make_source(tmp_path / "e", "dir", {"x/notes.txt": b""})
    with pytest.raises(DataError, match=r"^dataset.split=train: .* it holds no images \(.png.*\) at all$"):
        build_dataset(folder_cfg(empty, tmp_path / "root", split="train"), CPU, 0)


def test_image_sample_on_meta_device_has_no_host_sync(tmp_path):
    ds = build_dataset(folder_cfg(make_source(tmp_path, "zip"), tmp_path / "root"), torch.device("meta"), 0)
    x = ds.sample(8)
    assert x.shape == (8, 3, 32, 32) and x.device.type == "meta" and x.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_image_sample_on_cuda(tmp_path):
    dev = torch.device("cuda")
    for on_device, where in (("auto", "cuda"), (False, "cpu")):
        ds = build_dataset(folder_cfg(make_source(tmp_path / str(on_device), "zip"), tmp_path / "root",
                                      on_device=on_device), dev, 0)
        assert ds.data.device.type == where and ds.sample(8).device.type == "cuda"


# ---------------------------------------------------------------- the shared CIFAR-10 JPEG archive

CIFAR_JPEG = SHARED / "cifar10-jpeg.tar.gz"
needs_cifar_jpeg = pytest.mark.skipif(not CIFAR_JPEG.is_file(), reason=f"shared data {CIFAR_JPEG} absent")


@needs_cifar_jpeg
def test_shared_cifar_archive_test_split(tmp_path):
    ds = build_dataset(load_cfg("folder", path=str(CIFAR_JPEG), root=str(tmp_path), split="test"), CPU, 0)
    assert ds.num_images == 10_000 and ds.shape == (3, 32, 32)
    images = ds.real_uint8()
    assert images.float().mean().item() == pytest.approx(120, abs=10)  # CIFAR-10's mean pixel ≈ 121


@pytest.mark.slow
@needs_cifar_jpeg
def test_shared_cifar_archive_train_split_and_cache_speed(tmp_path):
    cfg = load_cfg("folder", path=str(CIFAR_JPEG), root=str(tmp_path), split="train")
    t0 = time.perf_counter()
    ds = build_dataset(cfg, CPU, 0)
    decode_s = time.perf_counter() - t0
    assert ds.num_images == 50_000 and ds.real_uint8().shape == (50_000, 3, 32, 32)
    assert decode_s < 60
    t0 = time.perf_counter()
    again = build_dataset(cfg, CPU, 0)
    assert time.perf_counter() - t0 < 5
    assert torch.equal(again.real_uint8(), ds.real_uint8())


# ---------------------------------------------------------------- torchvision MNIST / CIFAR-10

MNIST_RAW = SHARED / "mnist" / "raw"
needs_mnist = pytest.mark.skipif(not (MNIST_RAW / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason=f"shared MNIST test files absent from {MNIST_RAW}")


@pytest.fixture
def mnist_root(tmp_path):
    import shutil

    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_RAW.glob("t10k-*-ubyte.gz"):
        shutil.copy(f, raw / f.name)
    return tmp_path / "data"


@needs_mnist
def test_mnist_test_split_from_raw_files(mnist_root, caplog):
    from torchvision.datasets.mnist import read_image_file

    with caplog.at_level("INFO", logger="ganbench.data"):
        native = build_dataset(load_cfg("mnist", root=str(mnist_root), split="test", resolution=28), CPU, 0)
    assert f"dataset mnist: 10000 images (split=test) from {mnist_root}, 28x28x1" in caplog.messages
    assert native.shape == (1, 28, 28) and native.num_images == 10_000
    raw = read_image_file(str(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"))
    assert torch.equal(native.real_uint8()[:, 0], raw)
    assert native.labels[:5].tolist() == [7, 2, 1, 0, 4]

    ds = build_dataset(load_cfg("mnist", root=str(mnist_root), split="test"), CPU, 0)
    assert ds.shape == (1, 32, 32)
    torch.manual_seed(0)
    x = ds.sample(32)
    assert x.shape == (32, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    rgb = build_dataset(load_cfg("mnist", root=str(mnist_root), split="test", channels=3), CPU, 0).real_uint8()
    assert rgb.shape == (10_000, 3, 32, 32) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert len(list((mnist_root / "cache").glob("mnist-test-*.pt"))) == 3


def _no_network(monkeypatch):
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_cifar10_download_failure_is_one_line(tmp_path, monkeypatch):
    _no_network(monkeypatch)  # torchvision's real download code runs up to the network call
    t0 = time.perf_counter()
    with pytest.raises(DataError) as info:
        build_dataset(load_cfg("cifar10", root=str(tmp_path / "empty")), CPU, 0)
    assert time.perf_counter() - t0 < 30
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("cannot download CIFAR-10 into")
    assert "cifar-10-python.tar.gz" in msg and "GANBENCH_DATA" in msg
    # The offline alternative must keep training on the train split: without dataset.split a folder
    # with train/ and test/ sub-folders trains on both.
    assert "dataset=folder dataset.path=/path/to/images.tar.gz dataset.split=train " in msg


def test_download_hint_names_the_training_split(tmp_path, monkeypatch):
    """A failing download of the metrics' test split still suggests the split the run trains on."""
    from ganbench.data import images

    calls = []

    def failing(root, train, download):
        calls.append((train, download))
        raise RuntimeError("Dataset not found or corrupted")  # what torchvision raises without the files

    monkeypatch.setattr("torchvision.datasets.CIFAR10", failing)
    cfg = load_cfg("cifar10", root=str(tmp_path / "empty"), split="train")
    with pytest.raises(DataError) as info:
        images.load_torchvision(cfg, "cifar10", "test", 32, 3)
    assert calls == [(False, False), (False, True)]  # files on disk first, then the download
    assert "dataset.split=train " in str(info.value) and "dataset.split=test" not in str(info.value)


@needs_mnist
def test_mnist_train_download_failure_is_one_line(mnist_root, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(DataError) as info:
        build_dataset(load_cfg("mnist", root=str(mnist_root), split="train"), CPU, 0)
    msg = str(info.value)
    assert "\n" not in msg and "train-images-idx3-ubyte.gz" in msg and "MNIST" in msg
    assert "dataset=folder dataset.path=/path/to/images.tar.gz dataset.split=train " in msg


@needs_mnist
@pytest.mark.parametrize("bad", ["truncated-raw", "truncated-gz", "crafted-processed"])
def test_bad_mnist_file_is_named_and_runs_nothing(mnist_root, monkeypatch, tmp_path, bad):
    """A corrupt MNIST file, or a legacy processed/*.pt that weights_only=True refuses (torchvision reads those
    before the raw files), gives one line naming the file; the crafted file's payload does not run."""
    _no_network(monkeypatch)
    raw = mnist_root / "MNIST" / "raw"
    build_dataset(load_cfg("mnist", root=str(mnist_root), split="test", cache=False), CPU, 0)  # extracts the .gz
    marker = tmp_path / "MARKER"
    if bad == "truncated-raw":
        path = raw / "t10k-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:1000])
    elif bad == "truncated-gz":
        path = raw / "t10k-labels-idx1-ubyte.gz"
        (raw / "t10k-labels-idx1-ubyte").unlink()
        path.write_bytes(path.read_bytes()[:100])
    else:
        (mnist_root / "MNIST" / "processed").mkdir()
        path = mnist_root / "MNIST" / "processed" / "training.pt"
        for name in ("training.pt", "test.pt"):
            torch.save({"data": _Payload(marker)}, mnist_root / "MNIST" / "processed" / name)
    with pytest.raises(DataError) as info:
        build_dataset(load_cfg("mnist", root=str(mnist_root), split="test", cache=False), CPU, 0)
    msg = str(info.value)
    assert msg.startswith(f"MNIST file {path} is refused or corrupt (") and "\n" not in msg
    assert "weights_only=False" not in msg and not marker.exists()


def test_corrupt_cifar10_archive_is_named(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataError) as info:
        build_dataset(load_cfg("cifar10", root=str(root)), CPU, 0)
    assert str(info.value).startswith(f"CIFAR-10 file {root / 'cifar-10-python.tar.gz'} is refused or corrupt "
                                      "(ValueError: its md5 is not torchvision's c58f30108f718f92721af3b95e74349a)")


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_torchvision_split_must_be_train_or_test(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        build_dataset(load_cfg(name, root=str(tmp_path), split="nosuch"), CPU, 0)
    assert str(info.value) == "dataset.split: must be train or test (got 'nosuch')"


# ---------------------------------------------------------------- stacked MNIST

@needs_mnist
def test_stacked_mnist(mnist_root):
    cfg = load_cfg("stacked_mnist", root=str(mnist_root), split="test", reference_size=26_000)
    ds = build_dataset(cfg, CPU, 0)
    assert ds.kind == "image" and ds.shape == (3, 32, 32) and ds.num_modes == 1000
    digits, labels = ds.mnist_images, ds.mnist_labels
    assert digits.shape == (10_000, 1, 32, 32) and labels.shape == (10_000,)

    # Each channel of a training batch is one MNIST digit, drawn by its own index.
    torch.manual_seed(3)
    x = ds.sample(64)
    torch.manual_seed(3)
    idx = torch.randint(10_000, (64, 3))
    expected = digits[idx, 0].float() / 127.5 - 1
    torch.testing.assert_close(x, expected)
    assert (idx[:, 0] != idx[:, 1]).any()

    # The fixed reference sample: seeded, and its channels' digits are independent and uniform.
    ref, triples = ds.reference_sample()
    assert ref.shape == (26_000, 3, 32, 32) and ref.dtype == torch.uint8 and triples.shape == (26_000, 3)
    assert torch.equal(ds.real_uint8(), ref)
    assert torch.equal(build_dataset(cfg, CPU, 1).real_uint8()[:100], ref[:100])  # run seed does not matter
    lookup = {digits[i, 0].numpy().tobytes(): labels[i].item() for i in range(10_000)}
    for n in range(50):
        for c in range(3):
            assert lookup[ref[n, c].numpy().tobytes()] == triples[n, c].item()
    modes = triples[:, 0] * 100 + triples[:, 1] * 10 + triples[:, 2]
    assert torch.unique(modes).numel() > 990
    for a, b in ((0, 1), (0, 2), (1, 2)):
        same = (triples[:, a] == triples[:, b]).double().mean().item()
        assert abs(same - 0.1) < 0.01  # independent digits agree ~1/10 of the time


# ---------------------------------------------------------------- config validation (no data touched)

def test_validate_dataset_config(tmp_path):
    from ganbench.data import validate_dataset_config

    for path in sorted(CONF.glob("*.yaml")):
        extra = {"path": str(tmp_path)} if path.stem == "folder" else {}
        validate_dataset_config(load_cfg(path.stem, root=str(tmp_path / "root"), **extra))
    assert not (tmp_path / "root").exists()  # nothing downloaded, decoded or cached
    bad = [("ring8", {"std": 0}), ("ring8", {"radius": "x"}), ("grid25", {"std": -1}),
           ("swissroll", {"scale": 0}), ("cifar10", {"split": "val"}), ("cifar10", {"resolution": 0}),
           ("mnist", {"channels": 2}), ("cifar10", {"on_device": "maybe"}), ("stacked_mnist", {"reference_size": -5}),
           ("folder", {"path": None}), ("folder", {"path": str(tmp_path), "decode_workers": 0}),
           ("folder", {"path": str(tmp_path), "split": "a/b"})]
    for name, kw in bad:
        with pytest.raises(ConfigError) as info:
            validate_dataset_config(load_cfg(name, **kw))
        assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        validate_dataset_config(load_cfg("folder", path=str(tmp_path / "nope.zip")))
    validate_dataset_config(load_cfg("swissroll", noise=0))
