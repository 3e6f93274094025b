"""Inception weights cannot run code: every weights file is loaded with torch.load(weights_only=True) and
checked against the sha256 prefix of torch-fidelity's published file name before torch-fidelity sees it.

The real Inception weights are not needed: the tests use a crafted pickle (whose unpickling would create a
marker file), a harmless state dict with the wrong hash, and torch-fidelity's Inception architecture with
random weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle

import pytest
import torch

from ganbench.metrics import build_evaluator, features
from ganbench.metrics.features import WeightsUnavailable

from test_metrics import ImageData, ImageG, make_cfg

IMAGE_METRICS = ("is_mean", "is_std", "fid", "kid_mean", "kid_std")


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the code a crafted weights file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_pickle(path, marker, zip_format: bool):
    """A weights file whose unpickling creates ``marker``: torch.save's zip format or a raw pickle."""
    payload = {"Conv2d_1a_3x3.conv.weight": _Payload(marker)}
    if zip_format:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not os.path.exists(marker)
    return path


def test_full_unpickling_of_the_crafted_file_would_run_its_code(tmp_path):
    """The test file is really dangerous: torch.load(weights_only=False) creates the marker."""
    marker = tmp_path / "MARKER"
    path = crafted_pickle(tmp_path / "evil.pth", marker, zip_format=True)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["torch-save-zip", "raw-pickle"])
def test_crafted_pickle_is_refused_without_running_code(tmp_path, zip_format):
    marker = tmp_path / "MARKER"
    path = crafted_pickle(tmp_path / "evil.pth", marker, zip_format)
    with pytest.raises(WeightsUnavailable) as info:
        features.build_extractor("inception-v3-compat", "cpu", str(path), tmp_path / "cache")
    msg = str(info.value)
    assert not marker.exists()
    assert str(path) in msg and "weights_only=True" in msg and "refused" in msg
    assert "\n" not in msg and "weights_only=False" not in msg and "will likely succeed" not in msg
    # The check needs no hash to refuse it: load_verified_weights without a prefix refuses it too.
    with pytest.raises(WeightsUnavailable, match="refused"):
        features.load_verified_weights(path, hash_prefix=None)
    assert not marker.exists()


def test_crafted_inception_weights_give_one_warning_and_null_metrics(tmp_path, caplog):
    marker = tmp_path / "MARKER"
    path = crafted_pickle(tmp_path / "evil.pth", marker, zip_format=True)
    cfg = make_cfg(tmp_path, metrics_over={"inception_weights": str(path)})
    with caplog.at_level(logging.WARNING):
        ev = build_evaluator(cfg, ImageData(), "cpu", tmp_path)
        out = ev.evaluate(ImageG(), step=1, final=True, z_dim=8)
    assert not marker.exists()
    assert out == {k: None for k in IMAGE_METRICS}
    for k in IMAGE_METRICS:
        assert str(path) in ev.reasons[k] and "refused" in ev.reasons[k]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "\n" not in warnings[0]
    assert "weights_only=False" not in warnings[0]


def test_loadable_weights_with_the_wrong_hash_are_rejected(tmp_path):
    path = tmp_path / features.INCEPTION_FILE   # the right name does not make it the right file
    torch.save({"fc.weight": torch.zeros(3, 2)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert not digest.startswith(features.INCEPTION_HASH_PREFIX)
    with pytest.raises(WeightsUnavailable) as info:
        features.build_extractor("inception-v3-compat", "cpu", str(path), tmp_path / "cache")
    msg = str(info.value)
    assert str(path) in msg
    assert f"sha256 {digest[:16]}... does not match the published prefix {features.INCEPTION_HASH_PREFIX}" in msg
    assert "refused" not in msg  # it loaded fine; only the hash is wrong
    # With the right prefix (here: its own) the same file passes and comes back as a state dict.
    state, got = features.load_verified_weights(path, hash_prefix=digest[:8])
    assert got == digest and torch.equal(state["fc.weight"], torch.zeros(3, 2))


def test_cached_weights_are_checked_too_and_nothing_is_downloaded_over_them(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    cached = cache / "inception" / features.INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    crafted_pickle(cached, marker, zip_format=True)

    def no_download(*args, **kwargs):
        raise AssertionError("the cached file exists: nothing is downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    cfg = make_cfg(tmp_path)   # inception_weights: null -> <cache_dir>/inception/<file>
    assert cfg.metrics.cache_dir == str(cache)
    with caplog.at_level(logging.WARNING):
        ev = build_evaluator(cfg, ImageData(), "cpu", tmp_path)
        out = ev.evaluate(ImageG(), step=1, final=False, z_dim=8)
    assert not marker.exists()
    assert out == {k: None for k in IMAGE_METRICS}
    assert str(cached) in ev.reasons["fid"] and "delete it" in ev.reasons["fid"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(cached) in warnings[0]


def test_downloaded_weights_pass_the_same_checks(tmp_path, monkeypatch):
    """A download whose bytes pass torch.hub's own prefix check still goes through weights_only loading."""
    marker = tmp_path / "MARKER"
    source = crafted_pickle(tmp_path / "served.pth", marker, zip_format=True)

    def fake_download(url, dst, hash_prefix=None, progress=True):
        os.link(source, dst)  # as if the server sent this file and its hash had been accepted

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsUnavailable, match="refused") as info:
        features.build_extractor("inception-v3-compat", "cpu", None, tmp_path / "cache")
    assert not marker.exists()
    assert str(tmp_path / "cache" / "inception" / features.INCEPTION_FILE) in str(info.value)


def test_torch_fidelity_gets_the_verified_state_dict_not_the_file(tmp_path, monkeypatch):
    """Random Inception weights whose hash is declared to be the published one: torch-fidelity's
    constructor receives the dict loaded here; its own torch.load(weights_only=False) never runs."""
    path = features.write_random_inception_weights(tmp_path / "random.pth")
    digest = features.sha256_file(path)
    monkeypatch.setattr(features, "INCEPTION_HASH_PREFIX", digest[:8])
    real_load = torch.load
    loads = []

    def spy(f, *args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ex = features.build_extractor("inception-v3-compat", "cpu", str(path), tmp_path / "cache")
    assert loads == [True]
    assert ex.weights_hash == digest
    expected = real_load(path, weights_only=True)
    got = ex.net.state_dict()
    assert torch.equal(got["fc.weight"], expected["fc.weight"])
    assert torch.equal(got["Mixed_7c.branch_pool.conv.weight"], expected["Mixed_7c.branch_pool.conv.weight"])


def test_crafted_weights_through_a_tiny_run(tmp_path, image_overrides):
    """End to end through the CLI: a 2-step DCGAN run with metrics.inception_weights=<crafted file>
    completes, the marker never appears, stderr has one warning naming the file, and results.json records
    FID as null with the reason."""
    import json

    from conftest import FAST, ganbench_run

    marker = tmp_path / "MARKER"
    path = crafted_pickle(tmp_path / "evil.pth", marker, zip_format=True)
    run_dir = tmp_path / "run"
    overrides = FAST + image_overrides + [
        "train.iterations=2", "objective.n_dis=1", "metrics.names=[fid]", f"metrics.inception_weights={path}",
        f"metrics.cache_dir={tmp_path / 'cache'}", "eval.num_samples=8", "eval.num_samples_final=8",
        f"hydra.run.dir={run_dir}"]
    proc = ganbench_run([*overrides], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed"
    fid = record["metrics"]["fid"]
    assert fid["final"] is None and str(path) in fid["reason"] and "refused" in fid["reason"]
    output = proc.stdout + proc.stderr
    assert "weights_only=False" not in output
    train_log = "".join(p.read_text() for p in run_dir.glob("*.log"))
    assert sum(str(path) in line and "WARNING" in line for line in train_log.splitlines()) == 1, train_log[-3000:]


# ---------------------------------------------------------------- the digit classifier (mnist_is, stacked)

@pytest.mark.parametrize("where", ["classifier_path", "cached"])
@pytest.mark.parametrize("kind", ["crafted", "truncated", "not-a-classifier"])
def test_bad_classifier_file_is_named_and_runs_nothing(tmp_path, caplog, where, kind):
    """A refused, corrupt or foreign classifier file gives one warning naming the file, null mnist_is, and never
    the advice to load it with weights_only=False; the crafted one's payload does not run."""
    from test_mnist_is import DigitData, DigitG, eval_cfg

    cfg = eval_cfg(tmp_path, names=["mnist_is"], mnist_is_samples=50, mnist_is_splits=5)
    path = tmp_path / "clf.pt" if where == "classifier_path" else tmp_path / "cache" / "mnist_classifier.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if where == "classifier_path":
        cfg.metrics.classifier_path = str(path)
    marker = tmp_path / "MARKER"
    if kind == "crafted":
        torch.save({"state_dict": {}, "meta": {"width": _Payload(marker)}}, path)
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(100)}, "meta": {}}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        torch.save({"w": torch.zeros(3)}, path)  # plain tensors, but not save_classifier's layout
    with caplog.at_level(logging.WARNING):
        ev = build_evaluator(cfg, DigitData(), "cpu")
        out = ev.evaluate(DigitG(), step=0, final=False, z_dim=10)
    assert not marker.exists()
    assert out == {"mnist_is": None, "mnist_is_std": None}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"digit classifier {path} rejected: " in warnings[0] and "\n" not in warnings[0]
    assert "weights_only=False" not in warnings[0] and "will likely succeed" not in warnings[0]
    assert str(path) in ev.reasons["mnist_is"]
    if kind == "crafted":
        assert "torch.load(weights_only=True) refused it" in warnings[0]
    assert ("must be a file written by" if where == "classifier_path" else "delete it so that") in warnings[0]
