"""``ganbench-sample``: samples, grids, walks and density plots from a run's checkpoint; refusals in one line."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

from conftest import FAST, POINTS, VENV_BIN, cli_env, load_ckpt, run_train, shared_file

from ganbench import sample
from ganbench.sample import interpolate

SAMPLE = VENV_BIN / "ganbench-sample"


def listing(root: Path) -> Dict[str, float]:
    """Every file under ``root`` with its modification time: what a failed call must leave unchanged."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def call(argv: List[str], capsys) -> tuple:
    code = sample.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, image_folder, data_cache) -> Path:
    """A tiny DCGAN trained 4 steps on the test image folder, with an EMA generator."""
    run_dir = tmp_path_factory.mktemp("image_run") / "seed=0"
    record = run_train(run_dir, ["dataset=folder", f"dataset.path={image_folder}", "dataset.resolution=16",
                                 f"dataset.root={data_cache}", "dataset.decode_workers=1", "arch=dcgan",
                                 "arch.width=4", "arch.z_dim=8", "train.batch_size=8", "train.sample_grid=4",
                                 "train.iterations=4", "train.g_average=ema"])
    assert record["status"] == "completed"
    return run_dir


@pytest.fixture(scope="module")
def toy_job(tmp_path_factory) -> Path:
    """A replicated 2-D job: seeds 0 and 1 trained together, each in its own seed=<s>/ directory."""
    root = tmp_path_factory.mktemp("toy_job")
    record = run_train(root / "seed=0", POINTS + ["train.iterations=6", "train.replicas=2"])
    assert record["status"] == "completed"
    return root


def generator_of(run_dir: Path, ema: bool = False):
    G, _, _, _ = sample.load_generator(run_dir, ema, torch.device("cpu"))
    return G


# ---- the maths ----
def test_linear_interpolation_hits_both_ends_and_the_midpoint():
    z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    path = interpolate(z0, z1, 3, slerp=False)
    assert torch.allclose(path, torch.tensor([[1.0, 0.0], [0.5, 1.5], [0.0, 3.0]]))


def test_spherical_interpolation_follows_the_great_circle():
    """Between orthogonal unit vectors, slerp at t = 1/2 is (e1 + e2)/√2 (norm 1); linear would give norm 1/√2."""
    z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = interpolate(z0, z1, 3, slerp=True)
    assert torch.allclose(path[0], z0) and torch.allclose(path[2], z1, atol=1e-6)
    assert torch.allclose(path[1], torch.tensor([1.0, 1.0]) / 2 ** 0.5, atol=1e-6)
    assert torch.allclose(path.norm(dim=1), torch.ones(3), atol=1e-6)
    # Parallel ends (Ω = 0): the linear path, no division by sin 0.
    assert torch.allclose(interpolate(z0, 2 * z0, 3, slerp=True), interpolate(z0, 2 * z0, 3, slerp=False))


# ---- images ----
def test_npz_export_is_uint8_nhwc_and_reproducible(image_run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, text, err = call([image_run, "--n", 10, "--out", out, "--seed", 3], capsys)
    assert code == 0, err
    assert "10 samples" in text and str(out) in text
    array = np.load(out)["arr_0"]
    assert array.dtype == np.uint8 and array.shape == (10, 16, 16, 3)
    # The same conversion as the metrics: G(z) for z from the seed, clamp(x·127.5 + 128) truncated.
    G = generator_of(image_run)
    z = torch.randn(10, G.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = (G(z) * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(array, expected)
    again = tmp_path / "again.npz"
    assert call([image_run, "--n", 10, "--out", again, "--seed", 3], capsys)[0] == 0
    assert np.array_equal(np.load(again)["arr_0"], array)


def test_ema_samples_come_from_the_averaged_generator(image_run, tmp_path, capsys):
    plain, ema = tmp_path / "plain.npz", tmp_path / "ema.npz"
    assert call([image_run, "--n", 4, "--out", plain], capsys)[0] == 0
    code, text, _ = call([image_run, "--n", 4, "--out", ema, "--ema"], capsys)
    assert code == 0 and "averaged G" in text
    state = load_ckpt(image_run)
    G = generator_of(image_run, ema=True)
    assert torch.equal(G.state_dict()[next(iter(G.state_dict()))],
                       state["G_avg"]["module." + next(iter(G.state_dict()))])
    assert not np.array_equal(np.load(plain)["arr_0"], np.load(ema)["arr_0"])


def test_png_folder_grid_and_walk(image_run, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "pngs"
    assert call([image_run, "--n", 12, "--out", folder], capsys)[0] == 0
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{i:02d}.png" for i in range(12)]
    npz = tmp_path / "same.npz"
    assert call([image_run, "--n", 12, "--out", npz], capsys)[0] == 0
    assert np.array_equal(np.asarray(Image.open(files[5]).convert("RGB")), np.load(npz)["arr_0"][5])

    grid = tmp_path / "grid.png"
    assert call([image_run, "--grid", "--n", 9, "--out", grid], capsys)[0] == 0
    assert Image.open(grid).size == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)  # make_grid: 2-pixel padding
    walk = tmp_path / "walk.png"
    code, text, _ = call([image_run, "--walk", 3, "--steps", 5, "--slerp", "--out", walk], capsys)
    assert code == 0 and "3 spherical interpolations of 5 images" in text
    assert Image.open(walk).size == (5 * 16 + 6 * 2, 3 * 16 + 4 * 2)


def test_exported_samples_are_what_torch_fidelity_reads(image_run, tmp_path, capsys):
    """The PNG folder goes into torch-fidelity's calculate_metrics as a path; the npz as a dataset of its arrays.
    Both give the same features (a stand-in extractor: no Inception weights needed), so the export is in the
    layout the tools read: uint8, RGB, HWC in the files."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import register_feature_extractor

    class Pool(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("pool",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "pool"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            return (torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1),)

    try:
        register_feature_extractor("ganbench-test-pool", Pool)
    except Exception:  # registered by an earlier run of this test in the same process
        pass
    folder, npz = tmp_path / "pngs", tmp_path / "s.npz"
    assert call([image_run, "--n", 40, "--out", folder], capsys)[0] == 0
    assert call([image_run, "--n", 40, "--out", npz], capsys)[0] == 0

    class Arrays(torch.utils.data.Dataset):
        def __init__(self, nhwc):
            self.x = torch.from_numpy(nhwc).permute(0, 3, 1, 2)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    options = dict(fid=True, feature_extractor="ganbench-test-pool", feature_layer_fid="pool", cuda=False,
                   verbose=False, save_cpu_ram=True, cache=False, batch_size=16)
    same = torch_fidelity.calculate_metrics(input1=str(folder), input2=Arrays(np.load(npz)["arr_0"]), **options)
    assert abs(same["frechet_inception_distance"]) < 1e-6
    other = torch_fidelity.calculate_metrics(
        input1=str(folder), input2=Arrays(np.zeros((40, 16, 16, 3), np.uint8)), **options)
    assert other["frechet_inception_distance"] > 1e-3


@pytest.mark.slow
def test_sample_from_a_cifar10_run(tmp_path, data_cache, capsys):
    """The card's data: 3 steps of a width-8 DCGAN on the CIFAR-10 archive, then 1,000 samples as npz."""
    archive = shared_file("cifar10-jpeg.tar.gz")
    run_dir = tmp_path / "cifar" / "seed=0"
    record = run_train(run_dir, ["dataset=folder", f"dataset.path={archive}", "dataset.split=test",
                                 f"dataset.root={data_cache}", "arch=dcgan", "arch.width=8", "train.iterations=3",
                                 "train.batch_size=8", "train.sample_grid=4"])
    assert record["status"] == "completed"
    out = tmp_path / "cifar.npz"
    assert call([run_dir, "--n", 1000, "--out", out], capsys)[0] == 0
    assert np.load(out)["arr_0"].shape == (1000, 32, 32, 3)
    assert call([run_dir, "--walk", 2, "--out", tmp_path / "walk.png"], capsys)[0] == 0


# ---- 2-D runs: a replicated job's seeds ----
def test_points_grid_walk_and_density_of_each_replica(toy_job, tmp_path, capsys):
    from PIL import Image

    arrays = []
    for seed in (0, 1):
        out = tmp_path / f"points{seed}.npz"
        code, text, err = call([toy_job / f"seed={seed}", "--n", 100, "--out", out], capsys)
        assert code == 0, err
        arrays.append(np.load(out)["arr_0"])
        assert arrays[-1].shape == (100, 2) and arrays[-1].dtype == np.float32
        for kind in (["--density"], ["--grid"], ["--walk", "3", "--slerp"]):
            png = tmp_path / f"{kind[0][2:]}{seed}.png"
            code, text, err = call([toy_job / f"seed={seed}", *kind, "--n", 200, "--out", png], capsys)
            assert code == 0, err
            assert Image.open(png).size[0] > 100
    assert not np.array_equal(arrays[0], arrays[1])  # two trained generators, not one
    # The job's folder itself holds no checkpoint: the error names its runs.
    code, _, err = call([toy_job, "--out", tmp_path / "x.npz"], capsys)
    assert code == 1 and "seed=0, seed=1" in err and len(err.strip().splitlines()) == 1


# ---- refusals: one line, nothing written ----
def _bad_cases(image_run: Path, toy_job: Path, tmp_path: Path) -> List[tuple]:
    empty = tmp_path / "empty_run"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    existing = tmp_path / "exists.npz"
    existing.write_bytes(b"mine")
    newer = tmp_path / "newer" / "seed=0"
    (newer / "checkpoints").mkdir(parents=True)
    state = load_ckpt(image_run)
    state["format"] = 99
    torch.save(state, newer / "checkpoints" / "last.pt")
    gmm = tmp_path / "gmm" / "seed=0"
    (gmm / "checkpoints").mkdir(parents=True)
    state = load_ckpt(image_run)
    state["config"] = dict(state["config"], task="gmm")
    torch.save(state, gmm / "checkpoints" / "last.pt")
    noema = toy_job / "seed=0"
    return [
        ("no checkpoint", [empty, "--out", tmp_path / "a.npz"], "no checkpoint in"),
        ("not a folder", [tmp_path / "nope", "--out", tmp_path / "a.npz"], "is not a directory"),
        ("newer format", [newer, "--out", tmp_path / "a.npz"], "written by a newer ganbench"),
        ("gmm run", [gmm, "--out", tmp_path / "a.npz"], "task=gmm"),
        ("out not empty", [image_run, "--n", 2, "--out", full], "exists and is not empty"),
        ("out file exists", [image_run, "--n", 2, "--out", existing], "exists; choose another --out"),
        ("out parent missing", [image_run, "--n", 2, "--out", tmp_path / "no" / "a.npz"], "does not exist"),
        ("ema without average", [noema, "--ema", "--out", tmp_path / "a.npz"], "no averaged generator"),
        ("density of images", [image_run, "--density", "--out", tmp_path / "d.png"], "only for 2-D runs"),
        ("pngs of points", [noema, "--out", tmp_path / "pts"], "a 2-D run's samples are points"),
        ("walk suffix", [noema, "--walk", 2, "--out", tmp_path / "w.npz"], "--walk writes a PNG"),
        ("grid suffix", [image_run, "--grid", "--out", tmp_path / "g.jpg"], "writes a PNG file"),
        ("bad n", [image_run, "--n", 0, "--out", tmp_path / "a.npz"], "--n: must be an integer >= 1"),
        ("bad device", [image_run, "--device", "cuda:7", "--out", tmp_path / "a.npz"], "--device"),
    ]


def test_each_refusal_is_one_line_and_writes_nothing(image_run, toy_job, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name, argv, words in _bad_cases(image_run, toy_job, tmp_path):
        before = (listing(tmp_path), listing(image_run), listing(toy_job))
        code, out, err = call(argv, capsys)
        assert code == 1, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ganbench-sample: error: ") and words in lines[0], (name, err)
        assert "Traceback" not in err and out == ""
        assert (listing(tmp_path), listing(image_run), listing(toy_job)) == before, name
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine" and (tmp_path / "exists.npz").read_bytes() == b"mine"


def test_force_replaces_and_a_failure_leaves_the_old_output(image_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.npz"
    out.write_bytes(b"old")
    assert call([image_run, "--n", 3, "--out", out, "--force"], capsys)[0] == 0
    assert np.load(out)["arr_0"].shape[0] == 3

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", str(out))

    monkeypatch.setattr(np, "savez", broken)
    code, _, err = call([image_run, "--n", 5, "--out", out, "--force"], capsys)
    assert code == 1 and "No space left on device" in err
    assert np.load(out)["arr_0"].shape[0] == 3  # the previous output, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no temporary left behind


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        sample.main(["somewhere"])  # --out missing
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "--out" in err


def test_console_script_is_installed(image_run, tmp_path):
    out = tmp_path / "cli.npz"
    proc = subprocess.run([str(SAMPLE), str(image_run), "--n", "2", "--out", str(out)], capture_output=True,
                          text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out)["arr_0"].shape == (2, 16, 16, 3)
