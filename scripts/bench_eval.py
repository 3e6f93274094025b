"""Cost of one evaluation: generating samples with the default CIFAR-10 DCGAN generator and extracting their
Inception features (inception-v3-compat), batch by batch, as the Evaluator does; optionally the metric maths
(FID statistics + FID, KID, IS) on 10,000 features.

    python scripts/bench_eval.py --num-samples 10000                 # generate + extract, the FID cost
    python scripts/bench_eval.py --num-samples 400 --stage generate  # the generator alone
    python scripts/bench_eval.py --stage math                        # torch-fidelity's metric maths only
    python scripts/bench_eval.py --weights /path/to/weights-inception-2015-12-05-6726825d.pth

Without --weights the extractor gets randomly initialised weights: the same architecture, input resize and
FLOPs as the real network, so the timing is the same; the features are meaningless. Time whole processes
with two sample counts and take the difference to remove start-up (imports, building the networks):

    /usr/bin/time -f %e python scripts/bench_eval.py --num-samples 400
    /usr/bin/time -f %e python scripts/bench_eval.py --num-samples 100
    per-sample cost = (T400 - T100) / 300

The script also prints its own in-process stage timings as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def default_generator(device):
    """The generator of the default config (arch=dcgan: z 100 → 32×32×3, width 64), untrained."""
    from ganbench.archs import dcgan

    # conf/arch/g/dcgan.yaml's defaults are the schema's (tests/test_archs.py checks the two agree).
    G = dcgan.Generator(dcgan.GConfig(), (3, 32, 32))
    return G.to(device).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=250, help="eval.batch_size")
    p.add_argument("--stage", choices=["extract", "generate", "math"], default="extract",
                   help="extract: generate + Inception features (default); generate: G only; math: metric maths")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--weights", default=None, help="real inception-v3-compat weights (default: random init)")
    args = p.parse_args()

    import torch

    torch.set_flush_denormal(True)  # denormals make CPU timings swing wildly
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result = {"stage": args.stage, "num_samples": args.num_samples, "batch_size": args.batch_size,
              "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}
    t0 = time.perf_counter()

    if args.stage == "math":
        from ganbench.metrics import image

        g = torch.Generator().manual_seed(0)
        n = args.num_samples
        # Non-negative like post-ReLU pool features; the costs depend only on the shapes.
        real = torch.randn(n, 2048, generator=g).abs()
        fake = torch.randn(n, 2048, generator=g).abs()
        logits = torch.randn(n, 1008, generator=g)
        real_stats = image.fid_statistics(real)  # cached on disk in a real run: not timed below
        t = time.perf_counter()
        fake_stats = image.fid_statistics(fake)
        result["fid_statistics_s"] = time.perf_counter() - t
        t = time.perf_counter()
        image.fid_from_statistics(real_stats, fake_stats)
        result["fid_metric_s"] = time.perf_counter() - t
        t = time.perf_counter()
        image.kid(real, fake, subsets=100, subset_size=min(1000, n))
        result["kid_s"] = time.perf_counter() - t
        t = time.perf_counter()
        image.inception_score(logits, splits=10)
        result["is_s"] = time.perf_counter() - t
        print(json.dumps(result))
        return

    from ganbench.metrics.features import TorchFidelityExtractor, images_to_uint8, write_random_inception_weights

    G = default_generator(device)
    extractor = None
    if args.stage == "extract":
        weights = args.weights
        if weights is None:
            weights = write_random_inception_weights(Path(tempfile.mkdtemp(prefix="bench_eval_")) / "random.pth")
        extractor = TorchFidelityExtractor("inception-v3-compat", device, weights)
        result["weights"] = "given" if args.weights else "random init (same architecture and FLOPs)"
    result["setup_s"] = time.perf_counter() - t0

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # One warm-up batch (cuDNN autotuning, first-touch allocations) outside the timed loop.
    with torch.no_grad():
        x = G(torch.randn(min(args.batch_size, args.num_samples), G.z_dim, device=device))
        if extractor is not None:
            extractor.features(images_to_uint8(x))
    sync()
    z = torch.randn(args.num_samples, G.z_dim, generator=torch.Generator().manual_seed(0))
    t_gen = t_ext = 0.0
    with torch.no_grad():
        for s in range(0, args.num_samples, args.batch_size):
            t = time.perf_counter()
            x = images_to_uint8(G(z[s:s + args.batch_size].to(device)))
            sync()
            t_gen += time.perf_counter() - t
            if extractor is not None:
                t = time.perf_counter()
                feats = extractor.features(x)
                feats["pool"].cpu()
                sync()
                t_ext += time.perf_counter() - t
    result.update(generate_s=t_gen, extract_s=t_ext, total_loop_s=t_gen + t_ext,
                  per_sample_ms=1000 * (t_gen + t_ext) / args.num_samples)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
