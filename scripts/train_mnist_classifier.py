"""Train the MNIST digit classifier behind the Stacked-MNIST mode metrics and cache it where the evaluator
looks (metrics.classifier_path, default <cache_dir>/mnist_classifier.pt with
cache_dir = ${GANBENCH_CACHE:-~/.cache/ganbench}/metrics).

    python scripts/train_mnist_classifier.py                       # MNIST from ../shared/data or torchvision
    python scripts/train_mnist_classifier.py --mnist-root DIR --out PATH --device cuda

With MNIST's train split it trains on the 60,000 train digits and reports accuracy on the 10,000 test digits;
with only the test split (as in ../shared/data) it trains on a seeded random 8,000 of them and reports
accuracy on the 2,000 held out. The saved file's metadata says which, with the accuracy. Exits with status 1
when the accuracy is below --min-accuracy (default 0.98).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    cache = Path(os.path.expanduser(os.environ.get("GANBENCH_CACHE", "~/.cache/ganbench"))) / "metrics"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-root", default=None, help="folder with {train,t10k}-*-ubyte[.gz] (also searched: "
                   "../shared/data, $GANBENCH_DATA)")
    p.add_argument("--out", default=str(cache / "mnist_classifier.pt"))
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-accuracy", type=float, default=0.98)
    p.add_argument("--no-download", action="store_true", help="do not try torchvision's download")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from ganbench.metrics import stacked

    torch.set_flush_denormal(True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    roots = [args.mnist_root, os.environ.get("GANBENCH_DATA"), REPO.parent / "shared" / "data"]
    data = stacked.load_mnist(roots, download_root=None if args.no_download else cache / "mnist")
    if "test" not in data:
        print("error: no MNIST found (give --mnist-root DIR with t10k-images-idx3-ubyte[.gz])", file=sys.stderr)
        return 2
    model, meta = stacked.train_classifier(data, device=device, epochs=args.epochs, seed=args.seed)
    stacked.save_classifier(model, meta, args.out)
    print(json.dumps({"path": args.out, **meta}, indent=1))
    if meta["test_accuracy"] < args.min_accuracy:
        print(f"error: test accuracy {meta['test_accuracy']:.4f} < {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
