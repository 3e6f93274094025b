"""The MNIST classifier score ``mnist_is``: the Inception score with an MNIST digit classifier in place of
Inception-v3, as the DRAGAN authors score MNIST (their notebook kodalinaveen3/DRAGAN, ``get_inception_score``:
a softmax classifier of the digits, 10 contiguous splits, the mean of exp(mean KL) over the splits).

    mnist_is = 1/S Σ_s exp( 1/|X_s| Σ_{x∈X_s} KL(p(y|x) ‖ p_s(y)) ),   p_s(y) = 1/|X_s| Σ_{x∈X_s} p(y|x),

with X_s the s-th of S contiguous splits of the N samples (``metrics.mnist_is_samples``, at every evaluation) (split s holds samples ⌊sN/S⌋ … ⌊(s+1)N/S⌋ - 1, the
authors' slicing) and KL(p ‖ q) = Σ_y p_y (log p_y - log q_y), where 0·log 0 = 0 (the authors' code takes
log of the softmax, which is never exactly 0 in float32 for their linear model; ours can round to 0).
It lies in [1, 10]: 1 when every sample gets the same class distribution, 10 when each sample is classified
with certainty and the 10 digits are equally frequent within every split. ``mnist_is_std`` is the std over
the splits (numpy's, ddof = 0, as the Inception score's).

The classifier is ganbench's DigitClassifier (ganbench/metrics/stacked.py, the one Stacked MNIST uses, 99 %
test accuracy) rather than the authors' linear softmax regression (the TensorFlow MNIST tutorial's model, about 92 %): a better classifier is more
confident on good digits, so scores are not comparable with the authors' numbers, only among ganbench runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NUM_CLASSES = 10


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, images_uint8: torch.Tensor) -> torch.Tensor:
    """p(y|x) of uint8 (B, C, H, W) images: (B, 10) float64 on the images' device (the evaluator reads them on the
    host once per evaluation). Several channels are averaged to one
    (``dataset.channels=3`` repeats the digit in R, G, B); sides other than 28 are resized (bilinear,
    antialiased) to the classifier's 28×28, as for Stacked MNIST."""
    x = images_uint8.float().mean(1, keepdim=True) / 255
    if x.shape[-2:] != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return torch.softmax(model(x).double(), dim=1)


def classifier_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` contiguous splits of exp(E_x KL(p(y|x) ‖ p(y))), p(y) the split's mean of
    p(y|x); ``probs`` is (N, K) with rows summing to 1 (see the module docstring)."""
    p = probs.detach().to("cpu", torch.float64)
    n = len(p)
    if splits < 1 or n < splits:
        raise ValueError(f"{splits} splits need at least as many samples, got {n}")
    scores = []
    for s in range(splits):
        part = p[s * n // splits:(s + 1) * n // splits]
        marginal = part.mean(0, keepdim=True)
        # xlogy: 0·log 0 = 0 for classes a sample (or the whole split) never gets.
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal.expand_as(part))).sum(1)
        scores.append(math.exp(float(kl.mean())))
    mean = sum(scores) / splits
    std = math.sqrt(sum((x - mean) ** 2 for x in scores) / splits)
    return mean, std
