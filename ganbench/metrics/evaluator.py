"""The Evaluator: generates samples with a fixed seed, in batches, on the training device, and computes
the metrics selected for the dataset. Built once per run by ``build_evaluator``; the training loop calls
``evaluate`` every ``eval.every`` generator steps and at the end.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ganbench.errors import ConfigError, DataError, one_line_error
from ganbench.metrics import mnist_score, reference, stacked, toy
from ganbench.metrics.features import FeatureExtractor, WeightsUnavailable, build_extractor, images_to_uint8
# The metric names, their directions and the datasets' default groups (imported by name from here too) live in
# ganbench.metric_catalog, which imports no torch: the process that submits a hyperparameter search reads them.
from ganbench.metric_catalog import HIGHER_IS_BETTER, METRIC_GROUPS, MIXTURE_DATASETS, POINT_DATASETS, auto_groups

log = logging.getLogger(__name__)

EXTRACTOR_GROUPS = ("is", "fid", "kid", "prc", "dc")   # need a FeatureExtractor and an image dataset
POINT_GROUPS = ("modes", "energy")                       # need a 2-D dataset (modes: one with centres)
CLASSIFIER_GROUPS = ("stacked", "mnist_is")          # need the MNIST digit classifier
# mnist_is reads digits: MNIST itself, or an image folder of digits (e.g. the shared mnist-test-png archive).
MNIST_IS_DATASETS = ("mnist", "folder")
MIN_MODE_SAMPLES = 2500      # REFERENCE.md: count modes over ≥ 2,500 samples
MIN_STACKED_SAMPLES = 26000  # REFERENCE.md: Stacked-MNIST modes over ≥ 26,000 samples
REPO_ROOT = Path(__file__).resolve().parents[2]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(cfg: DictConfig) -> None:
    """Check the ``eval`` and ``metrics`` nodes; raise ConfigError naming the key, the value and what is allowed."""
    ev, m = cfg.get("eval"), cfg.get("metrics")
    if ev is None or m is None:
        raise ConfigError("config lacks the eval/metrics nodes; add '- eval: default' and '- metrics: default' "
                          "to the defaults list")

    def need_int(node, prefix, key, lo, why=""):
        v = node.get(key)
        if not _is_int(v) or v < lo:
            raise ConfigError(f"{prefix}.{key}: must be an integer >= {lo}{why}, got {v!r}")

    if ev.get("every") != "auto":
        need_int(ev, "eval", "every", 0, " (generator steps; 0 = only at the end), or auto")
    need_int(ev, "eval", "num_samples", 1)
    need_int(ev, "eval", "num_samples_final", 1)
    need_int(ev, "eval", "batch_size", 1)
    need_int(ev, "eval", "seed", 0)
    if ev.get("reference") not in ("train", "test"):
        raise ConfigError(f"eval.reference: must be 'train' or 'test', got {ev.get('reference')!r}")

    names = m.get("names")
    allowed = ", ".join(["auto", *METRIC_GROUPS])
    if isinstance(names, str):
        if names != "auto":
            raise ConfigError(f"metrics.names: must be 'auto' or a list of metrics, got {names!r}; allowed: {allowed}")
    elif isinstance(names, (list, ListConfig)):
        for n in names:
            if n not in METRIC_GROUPS:
                raise ConfigError(f"metrics.names: unknown metric {n!r}; allowed: {allowed}")
    else:
        raise ConfigError(f"metrics.names: must be 'auto' or a list of metrics, got {names!r}; allowed: {allowed}")
    need_int(m, "metrics", "is_splits", 1)
    need_int(m, "metrics", "kid_subsets", 1)
    need_int(m, "metrics", "kid_subset_size", 2)
    need_int(m, "metrics", "prc_k", 1)
    need_int(m, "metrics", "dc_k", 1)
    need_int(m, "metrics", "mode_samples", MIN_MODE_SAMPLES, " (the mode-coverage protocol)")
    need_int(m, "metrics", "mode_min_count", 1, " (high-quality samples that make a mode covered)")
    if m.get("hq_test") not in toy.HQ_TESTS:
        raise ConfigError(f"metrics.hq_test: must be one of {', '.join(toy.HQ_TESTS)}, got {m.get('hq_test')!r}")
    if m.get("reverse_kl_empty") not in toy.KL_EMPTY:
        raise ConfigError(f"metrics.reverse_kl_empty: must be one of {', '.join(toy.KL_EMPTY)}, "
                          f"got {m.get('reverse_kl_empty')!r}")
    need_int(m, "metrics", "stacked_samples", MIN_STACKED_SAMPLES, " (the Stacked-MNIST protocol)")
    need_int(m, "metrics", "mnist_is_samples", 1, " (samples of the MNIST classifier score)")
    need_int(m, "metrics", "mnist_is_splits", 1, " (splits of the MNIST classifier score)")
    if m.mnist_is_splits > m.mnist_is_samples:
        raise ConfigError(f"metrics.mnist_is_splits: {m.mnist_is_splits} splits need at least as many samples "
                          f"(metrics.mnist_is_samples={m.mnist_is_samples})")
    if not isinstance(m.get("prc"), bool):
        raise ConfigError(f"metrics.prc: must be true or false, got {m.get('prc')!r}")
    fe = m.get("feature_extractor")
    if not isinstance(fe, str) or not fe:
        raise ConfigError(f"metrics.feature_extractor: must be a torch-fidelity extractor name or 'module:callable', "
                          f"got {fe!r}")
    for key in ("cache_dir",):
        if not isinstance(m.get(key), str) or not m.get(key):
            raise ConfigError(f"metrics.{key}: must be a folder path, got {m.get(key)!r}")

    # Checks that depend on which metrics the dataset gets.
    ds_name = OmegaConf.select(cfg, "dataset.name", default=None)
    if ds_name is None:
        _check_extractor_name(fe)
        return
    kind = "points" if ds_name in POINT_DATASETS else "image"
    groups = (auto_groups(kind, ds_name, ds_name in MIXTURE_DATASETS, m.prc) if names == "auto" else list(names))
    _check_groups(groups, kind, ds_name, ds_name in MIXTURE_DATASETS)
    if any(g in EXTRACTOR_GROUPS for g in groups):
        _check_extractor_name(fe)
    if "kid" in groups:
        n = min(ev.num_samples, ev.num_samples_final)
        if m.kid_subset_size > n:
            raise ConfigError(f"metrics.kid_subset_size: {m.kid_subset_size} is larger than eval.num_samples "
                              f"({ev.num_samples}) or eval.num_samples_final ({ev.num_samples_final})")
    if "is" in groups and m.is_splits > min(ev.num_samples, ev.num_samples_final):
        raise ConfigError(f"metrics.is_splits: {m.is_splits} splits need at least as many samples "
                          f"(eval.num_samples={ev.num_samples})")


def _check_extractor_name(fe: str) -> None:
    """A torch-fidelity extractor name must be registered. Imported only where image metrics may run: the
    2-D path needs neither torch-fidelity nor torchvision."""
    if ":" in fe:
        return
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if fe not in FEATURE_EXTRACTORS_REGISTRY:
        raise ConfigError(f"metrics.feature_extractor: unknown extractor {fe!r}; allowed: "
                          f"{', '.join(FEATURE_EXTRACTORS_REGISTRY)} or 'module:callable'")


def _check_groups(groups, kind: str, name: str, has_centers: bool) -> None:
    for g in groups:
        if g in EXTRACTOR_GROUPS and kind != "image":
            raise ConfigError(f"metrics.names: {g!r} needs an image dataset; dataset {name!r} is 2-D points")
        if g in POINT_GROUPS and kind != "points":
            raise ConfigError(f"metrics.names: {g!r} needs a 2-D dataset; dataset {name!r} is images")
        if g == "modes" and not has_centers:
            raise ConfigError(f"metrics.names: 'modes' needs a mixture with centres (ring8, grid25), not {name!r}")
        if g == "stacked" and name != "stacked_mnist":
            raise ConfigError(f"metrics.names: 'stacked' needs dataset stacked_mnist, not {name!r}")
        if g == "mnist_is" and name not in MNIST_IS_DATASETS:
            raise ConfigError(f"metrics.names: 'mnist_is' (MNIST classifier score) needs digit images, dataset "
                              f"{' or '.join(MNIST_IS_DATASETS)}, not {name!r}")


@dataclass
class EvalSettings:
    """The evaluation protocol, from the eval and metrics config nodes."""

    num_samples: int = 10000
    num_samples_final: int = 50000
    reference: str = "train"
    batch_size: int = 250
    seed: int = 0
    is_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prc_k: int = 3
    dc_k: int = 5
    mode_samples: int = MIN_MODE_SAMPLES
    hq_test: str = "euclidean"
    mode_min_count: int = 1
    reverse_kl_empty: str = "skip"
    stacked_samples: int = MIN_STACKED_SAMPLES
    mnist_is_samples: int = 10000
    mnist_is_splits: int = 10
    cache_dir: str = "~/.cache/ganbench/metrics"

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> "EvalSettings":
        ev, m = cfg.eval, cfg.metrics
        return cls(num_samples=ev.num_samples, num_samples_final=ev.num_samples_final, reference=ev.reference,
                   batch_size=ev.batch_size, seed=ev.seed, is_splits=m.is_splits, kid_subsets=m.kid_subsets,
                   kid_subset_size=m.kid_subset_size, prc_k=m.prc_k, dc_k=m.dc_k, mode_samples=m.mode_samples,
                   hq_test=m.hq_test, mode_min_count=m.mode_min_count, reverse_kl_empty=m.reverse_kl_empty,
                   stacked_samples=m.stacked_samples, mnist_is_samples=m.mnist_is_samples,
                   mnist_is_splits=m.mnist_is_splits, cache_dir=m.cache_dir)


class Evaluator:
    """Computes the selected metric groups for one dataset.

    ``evaluate(G, step, final, z_dim, prefix="")`` returns ``{name: float | None}``; a None comes with
    ``reasons[name]``. ``higher_is_better[name]`` says which direction is better (prefixed names included once
    evaluated). ``protocol()`` describes how every number was obtained, for results.json.
    """

    def __init__(self, groups: list[str], dataset, device: torch.device | str, settings: EvalSettings,
                 extractor: FeatureExtractor | None = None, extractor_error: str | None = None,
                 classifier: torch.nn.Module | None = None, classifier_meta: dict | None = None,
                 classifier_error: str | None = None, extractor_info: dict | None = None):
        self.groups = list(groups)
        self.dataset = dataset
        self.device = torch.device(device)
        self.s = settings
        self.extractor = extractor
        self.extractor_info = extractor_info or {}
        self.classifier = classifier
        self.classifier_meta = classifier_meta or {}
        self.names = [n for g in self.groups for n in METRIC_GROUPS[g]]
        self.higher_is_better = {n: HIGHER_IS_BETTER[n] for n in self.names}
        self.reasons: dict[str, str] = {}     # why each metric of the latest evaluation is None
        self._r: dict[str, str] = {}
        # Persistent reasons (set once, at build time): a metric that can never be computed in this run.
        self._fixed_reasons: dict[str, str] = {}
        if extractor is None and any(g in EXTRACTOR_GROUPS for g in self.groups):
            for g in self.groups:
                if g in EXTRACTOR_GROUPS:
                    for n in METRIC_GROUPS[g]:
                        self._fixed_reasons[n] = extractor_error or "no feature extractor"
        for g in CLASSIFIER_GROUPS:
            if classifier is None and g in self.groups:
                for n in METRIC_GROUPS[g]:
                    self._fixed_reasons[n] = classifier_error or "no digit classifier"
        self.reasons.update(self._fixed_reasons)  # known before any evaluation
        self._ref: dict | None = None          # reference features/statistics, loaded or computed once
        self._ref_points: torch.Tensor | None = None
        self.reference_computations = 0        # how often real features were extracted (tests, logs)
        self._data_error_logged = False
        self.last_info: dict = {}

    # ------------------------------------------------------------------ sampling
    def _generate(self, G, n: int, z_dim: int):
        """Yield G(z) batch by batch for the same n latent vectors at every evaluation: z ~ N(0, I) drawn at
        once on the CPU from eval.seed, so the samples depend neither on the batch size nor on the device."""
        z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(self.s.seed)).to(self.device)
        for s in range(0, n, self.s.batch_size):
            x = G(z[s:s + self.s.batch_size])
            # Accumulated on the device and read once per evaluation: no host sync per batch.
            self._nonfinite = self._nonfinite | ~torch.isfinite(x).all()
            yield x

    def _extract(self, batches) -> dict[str, torch.Tensor]:
        """Run uint8 RGB batches through the extractor; concatenated float32 CPU features. The batches' features
        stay on the device until the last one: one copy to the host per evaluation, not one wait per batch."""
        out: dict[str, list[torch.Tensor]] = {}
        for u8 in batches:
            for k, v in self.extractor.features(u8).items():
                out.setdefault(k, []).append(v.detach().float())
        return {k: torch.cat(v).cpu() for k, v in out.items()}

    def _reference_pool_on_device(self) -> torch.Tensor:
        """The reference features on the evaluation device, uploaded once per run (precision/recall and
        density/coverage compare them with every evaluation's)."""
        ref = self._reference()
        if "pool_device" not in ref:
            ref["pool_device"] = ref["pool"].to(self.device)
        return ref["pool_device"]

    # ------------------------------------------------------------------ reference
    def _reference(self) -> dict:
        from ganbench.metrics import image  # torch-fidelity (and torchvision) only where image metrics run

        """Real features of eval.reference: from memory, else the disk cache, else extracted and cached."""
        if self._ref is not None:
            return self._ref
        # An image folder without train/test structure (dataset.split null) is its own reference.
        split = None if getattr(self.dataset, "split", self.s.reference) is None else self.s.reference
        real = self.dataset.real_uint8(split)
        if real.shape[1] == 1:
            real = real.expand(-1, 3, -1, -1)
        key = reference.reference_key(self.dataset.name, split or "all", real, self.extractor.name,
                                      self.extractor.weights_hash)
        path = Path(self.s.cache_dir).expanduser() / "reference" / f"{key}.npz"
        arrays = reference.load(path)
        if arrays is None:
            t0 = time.time()
            bs = self.s.batch_size
            feats = self._extract(real[s:s + bs].to(self.device) for s in range(0, len(real), bs))
            self.reference_computations += 1
            stats = image.fid_statistics(feats["pool"])
            arrays = {"pool": feats["pool"].numpy(), "mu": stats["mu"], "sigma": stats["sigma"]}
            reference.save(path, arrays)
            log.info("reference statistics for %s computed in %.1fs and cached in %s", key, time.time() - t0, path)
        else:
            log.info("reference statistics loaded from %s", path)
        self._ref = {"pool": torch.from_numpy(arrays["pool"]), "stats": {"mu": arrays["mu"], "sigma": arrays["sigma"]},
                     "key": key, "path": str(path), "num_images": int(len(arrays["pool"])), "split": split or "all"}
        return self._ref

    # ------------------------------------------------------------------ metric families
    def _image_metrics(self, G, n: int, z_dim: int) -> dict[str, float | None]:
        from ganbench.metrics import image

        out: dict[str, float | None] = {}
        groups = [g for g in self.groups if g in EXTRACTOR_GROUPS]
        ref = self._reference()
        fake = self._extract(images_to_uint8(x) for x in self._generate(G, n, z_dim))
        pool = fake["pool"]
        if "is" in groups:
            if "logits_unbiased" in fake:
                out["is_mean"], out["is_std"] = image.inception_score(fake["logits_unbiased"], self.s.is_splits)
            else:
                for k in ("is_mean", "is_std"):
                    out[k] = None
                    self._r[k] = f"extractor {self.extractor.name!r} has no class logits"
        if "fid" in groups:
            out["fid"] = image.fid_from_statistics(ref["stats"], image.fid_statistics(pool))
        if "kid" in groups:
            size = self.s.kid_subset_size
            if min(len(pool), len(ref["pool"])) < size:
                out["kid_mean"] = out["kid_std"] = None
                self._r["kid_mean"] = self._r["kid_std"] = (
                    f"KID subsets of {size} need >= {size} samples (fake {len(pool)}, real {len(ref['pool'])})")
            else:
                out["kid_mean"], out["kid_std"] = image.kid(ref["pool"], pool, self.s.kid_subsets, size)
        if "prc" in groups:
            out["precision"], out["recall"] = image.precision_recall(self._reference_pool_on_device(),
                                                                     pool.to(self.device), self.s.prc_k)
        if "dc" in groups:
            out["density"], out["coverage"] = image.density_coverage(self._reference_pool_on_device(),
                                                                     pool.to(self.device), self.s.dc_k)
        return out

    def _stacked_metrics(self, G, z_dim: int) -> dict[str, float]:
        digits = torch.cat([stacked.classify_channels(self.classifier, images_to_uint8(x))
                            for x in self._generate(G, self.s.stacked_samples, z_dim)]).cpu()
        return stacked.stacked_mode_metrics(digits)

    def _mnist_is(self, G, z_dim: int) -> dict[str, float]:
        probs = torch.cat([mnist_score.class_probabilities(self.classifier, images_to_uint8(x))
                           for x in self._generate(G, self.s.mnist_is_samples, z_dim)]).cpu()
        mean, std = mnist_score.classifier_score(probs, self.s.mnist_is_splits)
        return {"mnist_is": mean, "mnist_is_std": std}

    def _point_metrics(self, G, z_dim: int) -> dict[str, float | None]:
        pts = torch.cat([x.float() for x in self._generate(G, self.s.mode_samples, z_dim)]).cpu()
        out: dict[str, float | None] = {}
        if "modes" in self.groups:
            out.update(toy.mode_metrics(pts, self.dataset.centers, self._axis_std(), self.s.hq_test,
                                        self.s.mode_min_count, self.s.reverse_kl_empty))
            if out["reverse_kl"] is None:
                self._r["reverse_kl"] = f"no high-quality sample (none {self._hq_text()})"
        if "energy" in self.groups:
            if self._ref_points is None:
                gen = torch.Generator().manual_seed(self.s.seed + 1)
                self._ref_points = self.dataset.sample_eval(self.s.mode_samples, gen).float().cpu()
            out["energy"] = toy.energy_distance(pts, self._ref_points)
        return out

    def _axis_std(self):
        """The mixture's σ per axis (``axis_std`` when the dataset has one, else its isotropic ``std`` on
        every axis): what the Mahalanobis test divides by."""
        axis = getattr(self.dataset, "axis_std", None)
        return self.dataset.std if axis is None else axis

    def _hq_text(self) -> str:
        if self.s.hq_test == "mahalanobis":
            return "with Mahalanobis distance sqrt(sum_a d_a^2/sigma_a^2) < 3 to its nearest centre"
        return "within <= 3 std (Euclidean) of its nearest centre"

    # ------------------------------------------------------------------ entry point
    def evaluate(self, G: torch.nn.Module, step: int, final: bool, z_dim: int, prefix: str = "") -> dict[str, float | None]:
        """All selected metrics of generator G at generator step ``step``, keys prefixed by ``prefix``
        (e.g. "ema_" for averaged weights). G runs in eval mode without gradients and gets its mode back;
        the global RNG streams are left as they were, so evaluating does not change the training run."""
        if not self.names:
            return {}
        t0 = time.time()
        n = self.s.num_samples_final if final else self.s.num_samples
        values: dict[str, float | None] = {k: None for k in self._fixed_reasons}
        self._r = dict(self._fixed_reasons)  # reasons for this call's nulls, filled by the metric families
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        was_training = G.training
        G.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                if self.extractor is not None and any(g in EXTRACTOR_GROUPS for g in self.groups):
                    try:
                        values.update(self._image_metrics(G, n, z_dim))
                    except DataError as err:
                        # The reference split can't be read: no image metric, but the training goes on.
                        if not self._data_error_logged:
                            log.warning("image metrics recorded as null: reference images unavailable: %s", err)
                            self._data_error_logged = True
                        for g in self.groups:
                            for k in METRIC_GROUPS[g] if g in EXTRACTOR_GROUPS else ():
                                values[k] = None
                                self._r[k] = f"reference images unavailable: {err}"
                if "stacked" in self.groups and self.classifier is not None:
                    values.update(self._stacked_metrics(G, z_dim))
                if "mnist_is" in self.groups and self.classifier is not None:
                    values.update(self._mnist_is(G, z_dim))
                if any(g in POINT_GROUPS for g in self.groups):
                    values.update(self._point_metrics(G, z_dim))
        finally:
            G.train(was_training)
        if bool(self._nonfinite):
            # uint8 conversion would silently turn NaN into black pixels; no number is better than a wrong one.
            for k in self.names:
                values[k] = None
                self._r.setdefault(k, "the generator's samples contain NaN or inf")
        for k, v in values.items():
            if v is not None and not math.isfinite(v):
                values[k] = None
                self._r[k] = f"not finite ({v})"
        out = {prefix + k: values.get(k) for k in self.names}
        for k in self.names:
            self.higher_is_better[prefix + k] = HIGHER_IS_BETTER[k]
            if out[prefix + k] is None:
                self.reasons[prefix + k] = self._r.get(k, "not computed")
            else:
                self.reasons.pop(prefix + k, None)
        self.last_info = {"step": step, "final": final, "prefix": prefix, "num_samples": n,
                          "seconds": time.time() - t0}
        log.info("evaluation at step %d%s took %.1fs", step, " (final)" if final else "", self.last_info["seconds"])
        return out

    # ------------------------------------------------------------------ protocol
    def protocol(self) -> dict:
        """How every number was obtained (results.json's "protocol")."""
        from importlib.metadata import PackageNotFoundError, version

        def installed(dist: str):
            try:
                return version(dist)  # read from the package metadata: importing it is not needed
            except PackageNotFoundError:
                return None

        p: dict = {"metrics": list(self.names), "groups": list(self.groups), "dataset": getattr(self.dataset, "name", None),
                   "seed": self.s.seed, "batch_size": self.s.batch_size, "latent": "z ~ N(0, I), drawn on the CPU "
                   "from eval.seed, identical at every evaluation",
                   "versions": {"torch": torch.__version__, "torch_fidelity": installed("torch-fidelity"),
                                "torchvision": installed("torchvision")},
                   "device": str(self.device)}
        if any(g in EXTRACTOR_GROUPS for g in self.groups):
            p["image"] = {
                "num_samples": self.s.num_samples, "num_samples_final": self.s.num_samples_final,
                "reference_split": self._ref["split"] if self._ref else self.s.reference,
                "reference_images": self._ref["num_images"] if self._ref else None,
                "reference_cache": self._ref["path"] if self._ref else None,
                "to_uint8": "clamp(x*127.5+128, 0, 255) truncated; grayscale repeated to RGB",
                "extractor": {"name": getattr(self.extractor, "name", None),
                              "weights_sha256": getattr(self.extractor, "weights_hash", None),
                              **self.extractor_info},
                "computed_by": "torch-fidelity metric functions (density/coverage: ganbench, Naeem et al. 2020)",
            }
            details = {"is": {"splits": self.s.is_splits, "features": "logits_unbiased"},
                       "fid": {"features": "pool (2048-d for Inception)"},
                       "kid": {"subsets": self.s.kid_subsets, "subset_size": self.s.kid_subset_size,
                               "kernel": "(x.y/d + 1)^3", "estimator": "unbiased"},
                       "prc": {"k": self.s.prc_k, "method": "Kynkaanniemi et al. 2019"},
                       "dc": {"k": self.s.dc_k, "method": "Naeem et al. 2020"}}
            p["image"].update({g: details[g] for g in self.groups if g in details})
        if any(g in POINT_GROUPS for g in self.groups):
            p["points"] = {"num_samples": self.s.mode_samples, "std": getattr(self.dataset, "std", None)}
            if "modes" in self.groups:
                axis = self._axis_std()
                p["points"]["modes"] = (
                    f"high-quality = {self._hq_text()} (metrics.hq_test={self.s.hq_test}); covered = nearest centre "
                    f"of >= {self.s.mode_min_count} high-quality sample(s) (metrics.mode_min_count); reverse_kl = "
                    f"KL(p_modes || uniform) of the high-quality samples' nearest-centre histogram over all modes, "
                    + ("empty modes as 0 log 0 = 0" if self.s.reverse_kl_empty == "skip"
                       else "add-one pseudo-counts on every mode") + f" (metrics.reverse_kl_empty="
                    f"{self.s.reverse_kl_empty})")
                p["points"]["mode_test"] = {"hq_test": self.s.hq_test, "mode_min_count": self.s.mode_min_count,
                                            "reverse_kl_empty": self.s.reverse_kl_empty,
                                            "axis_std": axis.tolist() if hasattr(axis, "tolist") else axis}
            if "energy" in self.groups:
                p["points"]["energy"] = ("unbiased energy distance 2E|x-y| - E|x-x'| - E|y-y'| against as many "
                                         "reference samples drawn with seed eval.seed+1")
        if "stacked" in self.groups:
            p["stacked"] = {"num_samples": self.s.stacked_samples,
                            "mode": "argmax digit per channel, 1000 modes; stacked_kl = KL(p_modes || uniform_1000)",
                            "classifier": self.classifier_meta}
        if "mnist_is" in self.groups:
            p["mnist_is"] = {"num_samples": self.s.mnist_is_samples, "splits": self.s.mnist_is_splits,
                             "score": "mean over contiguous splits of exp(E_x KL(p(y|x) || p(y))), p(y|x) the digit "
                                      "classifier's softmax on the sample (channels averaged, resized to 28x28); "
                                      "std over the splits (DRAGAN authors' MNIST score)",
                             "classifier": self.classifier_meta}
        return p


def _mnist_roots(cfg: DictConfig) -> list:
    return [OmegaConf.select(cfg, "metrics.mnist_root", default=None),
            OmegaConf.select(cfg, "dataset.root", default=None),
            REPO_ROOT.parent / "shared" / "data"]


def load_or_train_classifier(cfg: DictConfig, device) -> tuple[torch.nn.Module, dict]:
    """The cached digit classifier (metrics.classifier_path, default <cache_dir>/mnist_classifier.pt), trained
    and cached on first use. Raises FileNotFoundError when it is missing and no MNIST data can be found, and
    WeightsUnavailable naming the file when torch.load(weights_only=True) refuses it or it is corrupt."""
    cache_dir = Path(cfg.metrics.cache_dir).expanduser()
    path = Path(cfg.metrics.classifier_path or cache_dir / "mnist_classifier.pt").expanduser()
    if not path.is_file():
        data = stacked.load_mnist(_mnist_roots(cfg), download_root=cache_dir / "mnist")
        if "test" not in data:
            raise FileNotFoundError(f"no digit classifier at {path} and no MNIST data to train one "
                                    f"(set metrics.mnist_root or run scripts/train_mnist_classifier.py)")
        log.info("training the Stacked-MNIST digit classifier (first use) -> %s", path)
        # Training seeds torch's global RNG; keep the GAN run's streams untouched.
        with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
            model, meta = stacked.train_classifier(data, device=device)
        stacked.save_classifier(model, meta, path)
        log.info("digit classifier: test accuracy %.4f on %s", meta["test_accuracy"], meta["test_split"])
    import pickle

    from ganbench.metrics.features import _refusal, sha256_file

    try:
        model, meta = stacked.load_classifier(path, device)
    except Exception as err:  # noqa: BLE001 - refused (weights-only), truncated, or not save_classifier's layout
        # The file is named, and what torch.load objected to, never its advice to load the file unrestricted.
        why = (f"torch.load(weights_only=True) refused it ({_refusal(err)})" if isinstance(err, pickle.UnpicklingError)
               else one_line_error(err).split(". ")[0])
        where = ("metrics.classifier_path must be a file written by scripts/train_mnist_classifier.py"
                 if cfg.metrics.classifier_path else "delete it so that it is trained again")
        raise WeightsUnavailable(f"digit classifier {path} rejected: {why}; {where}") from None
    return model, {**meta, "path": str(path), "sha256": sha256_file(path)}


def build_evaluator(cfg: DictConfig, dataset, device: torch.device | str, run_dir: str | Path | None = None,
                    extractor: FeatureExtractor | None = None) -> Evaluator:
    """The Evaluator for ``dataset`` under ``cfg.eval`` / ``cfg.metrics``.

    Metric groups: ``metrics.names`` (auto = by dataset). Image metrics get ``extractor`` if given, else the
    network named by ``metrics.feature_extractor``; when its weights can be neither found nor downloaded,
    the problem is logged once and those metrics are None with the reason, for the whole run. ``run_dir`` is
    accepted for symmetry with the other builders and not written to.
    """
    validate(cfg)
    names = cfg.metrics.names
    has_centers = getattr(dataset, "centers", None) is not None
    groups = (auto_groups(dataset.kind, dataset.name, has_centers, cfg.metrics.prc) if names == "auto"
              else list(names))
    _check_groups(groups, dataset.kind, dataset.name, has_centers)
    settings = EvalSettings.from_cfg(cfg)
    kw: dict = {}
    if any(g in EXTRACTOR_GROUPS for g in groups):
        info = {"configured": cfg.metrics.feature_extractor if extractor is None else "passed in"}
        if extractor is None:
            try:
                extractor = build_extractor(cfg.metrics.feature_extractor, device, cfg.metrics.inception_weights,
                                            settings.cache_dir, cfg)
            except WeightsUnavailable as err:
                affected = [n for g in groups if g in EXTRACTOR_GROUPS for n in METRIC_GROUPS[g]]
                log.warning("image metrics disabled for this run, recorded as null (%s): %s", ", ".join(affected), err)
                kw["extractor_error"] = info["error"] = str(err)
        info["weights"] = getattr(extractor, "weights_path", None)
        kw["extractor_info"] = info
    if any(g in CLASSIFIER_GROUPS for g in groups):
        try:
            kw["classifier"], kw["classifier_meta"] = load_or_train_classifier(cfg, device)
        except (FileNotFoundError, OSError, RuntimeError) as err:
            affected = [n for g in groups if g in CLASSIFIER_GROUPS for n in METRIC_GROUPS[g]]
            log.warning("digit-classifier metrics disabled for this run, recorded as null (%s): %s",
                        ", ".join(affected), err)
            kw["classifier_error"] = str(err)
    return Evaluator(groups, dataset, device, settings, extractor=extractor, **kw)
