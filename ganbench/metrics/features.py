"""Feature extractors for the image metrics: one small interface, torch-fidelity's networks behind it.

Every image metric (IS, FID, KID, precision/recall, density/coverage) is computed from the features of a
``FeatureExtractor``: anything with a ``name``, a ``weights_hash`` and a ``features(uint8 NCHW) -> dict``
method. ganbench ships one implementation, ``TorchFidelityExtractor``, which wraps a network from
torch-fidelity's registry (by default ``inception-v3-compat``, the TensorFlow-compatible Inception-v3 that
the published IS/FID numbers use). Tests plug in a tiny deterministic extractor; users can plug in their own
with ``metrics.feature_extractor=my.module:factory``.

Weights files cannot run code: torch-fidelity unpickles a weights path with full pickle, so ganbench loads
every file itself with ``torch.load(weights_only=True)`` and, for the Inception file (given, cached or
downloaded), checks its sha256 against the prefix in the published file name; torch-fidelity then gets
the loaded state dict, never the file (``load_verified_weights``, ``TorchFidelityExtractor``).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable
from unittest import mock

import torch

log = logging.getLogger(__name__)

# torch-fidelity's converted TensorFlow weights; the file name carries the first 8 hex digits of its sha256.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_HASH_PREFIX = "6726825d"


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the image metrics need from a network.

    ``features(images)`` takes uint8 images (B, 3, H, W) in [0, 255] on the evaluation device and returns
    ``{"pool": (B, D) float}`` (FID, KID, precision/recall, density/coverage) and, if the network is a
    classifier, ``"logits_unbiased": (B, K) float`` (Inception Score). ``name`` and ``weights_hash`` identify
    the network in the reference-statistics cache key and in results.json's protocol.
    """

    name: str
    weights_hash: str

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


class WeightsUnavailable(RuntimeError):
    """The extractor's weights can be neither found locally nor downloaded."""


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 [0, 255]: ``clamp(x·127.5 + 128, 0, 255)`` truncated, as StyleGAN2-ADA does.

    Adding 128 rather than 127.5 before truncation rounds to the nearest integer, so real uint8 pixels that
    went through ``u/127.5 - 1`` come back unchanged. Grayscale images are repeated to three channels because
    the extractors expect RGB.
    """
    out = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def resolve_inception_weights(weights: str | None, cache_dir: str | os.PathLike, url: str | None = None) -> Path:
    """Path of the inception-v3-compat weights: ``weights`` if given, else ``<cache_dir>/inception/<file>``,
    downloaded there (hash-checked, written to a temporary file then renamed) on first use.

    Raises WeightsUnavailable with a message the user can act on when neither works.
    """
    if weights is not None:
        path = Path(os.path.expanduser(str(weights)))
        if not path.is_file():
            raise WeightsUnavailable(f"metrics.inception_weights={weights} does not exist")
        return path
    path = Path(os.path.expanduser(str(cache_dir))) / "inception" / INCEPTION_FILE
    if path.is_file():
        return path
    url = url or INCEPTION_URL
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading Inception-v3 weights %s -> %s", url, path)
        # download_url_to_file writes a temporary file and renames it only after the hash check passes.
        torch.hub.download_url_to_file(url, str(path), hash_prefix=INCEPTION_HASH_PREFIX, progress=False)
    except Exception as err:  # noqa: BLE001 - any failure (DNS, HTTP, disk, hash) means "no weights"
        raise WeightsUnavailable(
            f"Inception weights not in {path} and download from {url} failed ({type(err).__name__}: {err}); "
            f"put {INCEPTION_FILE} there or set metrics.inception_weights=/path/to/{INCEPTION_FILE}"
        ) from err
    return path


def _refusal(err: BaseException) -> str:
    """What torch.load(weights_only=True) objected to, without torch's advice to retry unsafely.

    torch's message is several paragraphs that end up suggesting to load the file with full unpickling;
    only the unpickler's own finding ("Unsupported global: GLOBAL posix.system", "Unsupported operand
    149") is kept.
    """
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", text)
    if found:
        # "Unsupported global: GLOBAL posix.system was not an allowed global by default. Please use ..."
        return f"{type(err).__name__}: " + found.group(1).split(" was not an allowed")[0].split(". ")[0].strip()
    first = text.strip().splitlines()[0] if text.strip() else ""
    if "weights_only" in first or not first:
        return type(err).__name__
    return f"{type(err).__name__}: {first[:200]}"


def load_verified_weights(path: str | os.PathLike, hash_prefix: str | None = INCEPTION_HASH_PREFIX,
                          hint: str = "") -> tuple[dict, str]:
    """(state_dict, sha256) of a weights file that passed both checks, else WeightsUnavailable.

    1. ``torch.load(..., map_location="cpu", weights_only=True)``: the restricted unpickler builds tensors
       and plain containers only, so a crafted file cannot run code; it must give a dict of tensors.
    2. its sha256 must start with ``hash_prefix`` (the prefix torch-fidelity publishes in the file name;
       None skips this check, for weights the user made, e.g. write_random_inception_weights).

    The bytes are read once and both checks run on those bytes, so the file cannot be swapped between
    hashing and loading. The error is one line naming the file and every check it failed, never advice to
    load it without the restriction.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WeightsUnavailable(f"weights file {path} cannot be read ({err.strerror or err})") from None
    digest = hashlib.sha256(data).hexdigest()
    problems = []
    state = None
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise beside the one warning the caller logs.
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any refusal means "not a plain weights file"
        problems.append(f"torch.load(weights_only=True) refused it ({_refusal(err)})")
    else:
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            problems.append(f"it holds a {type(state).__name__}, not a state dict of tensors")
    if hash_prefix is not None and not digest.startswith(hash_prefix):
        problems.append(f"its sha256 {digest[:16]}... does not match the published prefix {hash_prefix}")
    if problems:
        raise WeightsUnavailable(f"weights file {path} rejected: {'; '.join(problems)}" + (f"; {hint}" if hint else ""))
    return dict(state), digest


def verified_inception_weights(weights: str | None, cache_dir: str | os.PathLike,
                               url: str | None = None) -> tuple[Path, dict, str]:
    """(path, state_dict, sha256) of the inception-v3-compat weights (resolve_inception_weights), whether
    given, cached or just downloaded, after load_verified_weights' two checks against INCEPTION_HASH_PREFIX."""
    path = resolve_inception_weights(weights, cache_dir, url)
    if weights is not None:
        hint = f"metrics.inception_weights must be torch-fidelity's published {INCEPTION_FILE}"
    else:
        hint = f"delete it so that {INCEPTION_FILE} is downloaded again, or set metrics.inception_weights"
    state, digest = load_verified_weights(path, INCEPTION_HASH_PREFIX, hint)
    return path, state, digest


class TorchFidelityExtractor:
    """A network from torch-fidelity's registry behind the FeatureExtractor interface.

    Runs on ``device`` in float32, in eval mode, without gradients. For ``inception-v3-compat`` the pool
    feature is the 2048-d average pool and ``logits_unbiased`` the 1008 logits without the fc bias, which is
    what torch-fidelity's own IS/FID/KID use.
    """

    def __init__(self, name: str, device: torch.device | str, weights_path: str | os.PathLike | None = None,
                 state_dict: dict | None = None, weights_hash: str | None = None):
        """``weights_path`` without ``state_dict``: the file is loaded here with weights_only=True (no hash
        check; build_extractor checks the Inception file's hash and passes ``state_dict`` and its sha256).
        Either way torch-fidelity gets the loaded state dict, never the file: its constructors unpickle
        ``feature_extractor_weights_path`` with ``torch.load(weights_only=False)``."""
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        if name not in FEATURE_EXTRACTORS_REGISTRY:
            raise KeyError(name)
        cls = FEATURE_EXTRACTORS_REGISTRY[name]
        self._pool_layer = cls.get_default_feature_layer_for_metric("fid")
        # Only a real classifier head makes the Inception Score meaningful.
        provided = cls.get_provided_features_list()
        self._logits_layer = "logits_unbiased" if "logits_unbiased" in provided else None
        layers = [self._pool_layer] + ([self._logits_layer] if self._logits_layer else [])
        if weights_path is not None and state_dict is None:
            state_dict, weights_hash = load_verified_weights(weights_path, hash_prefix=None)
        kwargs = {"verbose": False}
        handed = []
        try:
            if weights_path is None:
                net = cls(name, layers, **kwargs)
            else:
                kwargs["feature_extractor_weights_path"] = str(weights_path)
                with mock.patch.object(torch, "load", _handoff(str(weights_path), state_dict, handed)):
                    net = cls(name, layers, **kwargs)
                if not handed:
                    raise WeightsUnavailable(f"torch-fidelity's {name!r} did not take the weights of {weights_path}")
        except WeightsUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - torch-fidelity downloads its other networks itself
            raise WeightsUnavailable(f"feature extractor {name!r} could not be created ({type(err).__name__}: {err})") from err
        # channels_last: 1.4x faster convolutions on CPU (measured) and the layout tensor cores want; a memory
        # layout only, the features agree with the default layout to float32 rounding (~3e-7 relative).
        self.net = net.to(device).eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.name = name
        self.weights_path = str(weights_path) if weights_path is not None else None
        if weights_path is None:
            self.weights_hash = "torch-fidelity-default"
        else:
            self.weights_hash = weights_hash or sha256_file(weights_path)
        self._layers = layers

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net.convert_features_tuple_to_dict(self.net(images))
        feats = {"pool": out[self._pool_layer]}
        if self._logits_layer:
            feats["logits_unbiased"] = out[self._logits_layer]
        return feats


def _handoff(path: str, state_dict: dict, handed: list):
    """A stand-in for ``torch.load`` while torch-fidelity's constructor runs: the already verified
    ``state_dict`` for ``path``; any other load is refused, so nothing is unpickled behind our back."""

    def load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and os.fspath(f) == path:
            handed.append(path)
            return state_dict
        raise WeightsUnavailable(f"unexpected torch.load({f!r}) while building the feature extractor")

    return load


def write_random_inception_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save randomly initialised inception-v3-compat weights (same architecture and FLOPs, meaningless
    features) for timing and for exercising the real extractor code path where the weights can't be had."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    # The constructor insists on loading weights; skip that step to get PyTorch's default initialisation.
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def build_extractor(name: str, device: torch.device | str, weights: str | None, cache_dir: str | os.PathLike,
                    cfg=None) -> FeatureExtractor:
    """The extractor named by ``metrics.feature_extractor``.

    ``name`` is either a torch-fidelity registry name (``inception-v3-compat``, ``vgg16``, ``dinov2-vit-s-14``,
    ...) or ``package.module:callable``; the callable is called as ``callable(device=..., cfg=...)`` and must
    return a FeatureExtractor. Raises WeightsUnavailable when the network's weights can't be had, or when
    the Inception file (given, cached or downloaded) fails load_verified_weights' checks.
    """
    if ":" in name:
        module, _, attr = name.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        extractor = factory(device=device, cfg=cfg)
        if not isinstance(extractor, FeatureExtractor):
            raise TypeError(f"{name} returned {type(extractor).__name__}, which is not a FeatureExtractor")
        return extractor
    if name == "inception-v3-compat":
        path, state, digest = verified_inception_weights(weights, cache_dir)
        return TorchFidelityExtractor(name, device, path, state_dict=state, weights_hash=digest)
    return TorchFidelityExtractor(name, device, weights)
