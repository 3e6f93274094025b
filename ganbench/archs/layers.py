"""Layers of Salimans et al. 2016, "Improved Techniques for Training GANs": minibatch discrimination (a D
layer) and virtual batch normalisation (a G normalisation); and maxout units (Goodfellow et al. 2013), the
hidden layers of PacGAN's toy discriminators."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, §3.2).

    For the features f(x_i) ∈ ℝ^A of the n samples of a batch and a learned tensor T ∈ ℝ^{A×B×C}:
    M_i = f(x_i)·T ∈ ℝ^{B×C}; c_b(x_i, x_j) = exp(-‖M_{i,b} - M_{j,b}‖₁); o(x_i)_b = Σ_{j=1..n} c_b(x_i, x_j);
    the output is [f(x_i), o(x_i)] ∈ ℝ^{A+B}, fed to D's last layer.

    As the paper writes it, the sum runs over every j, i itself included (c_b(x_i, x_i) = 1). The authors'
    code (openai/improved-gan, nn.MinibatchLayer) leaves j = i out; the two differ by the constant 1 per
    kernel, which the bias of the linear layer that follows absorbs exactly. That code also reparametrises
    T with weight normalisation and adds a bias to o; here T is a plain parameter, initialised N(0, 0.05)
    as there.

    o(x_i) depends on every sample of the batch: D's output is not per-sample, so gradient penalties
    (which constrain per-sample input gradients) are refused with this layer (ganbench/archs/__init__.py),
    and real and fake batches must go through D separately (``couples_batch``).
    """

    #: D's output for one sample depends on the others of its batch (read by the game step, which then
    #: runs real and fake batches through D separately, as it does for batch norm).
    couples_batch = True

    def __init__(self, in_features: int, kernels: int, kernel_dim: int):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.empty(in_features, kernels, kernel_dim))
        nn.init.normal_(self.T, 0.0, 0.05)

    def similarities(self, f: Tensor) -> Tensor:
        """o(x_i)_b for the batch ``f`` of shape (n, A): shape (n, B)."""
        M = (f.flatten(1) @ self.T.flatten(1)).view(-1, self.kernels, self.kernel_dim)  # (n, B, C)
        l1 = (M.unsqueeze(1) - M.unsqueeze(0)).abs().sum(-1)  # (n, n, B): ‖M_{i,b} - M_{j,b}‖₁
        return torch.exp(-l1).sum(1)

    def forward(self, f: Tensor) -> Tensor:
        f = f.flatten(1)
        return torch.cat([f, self.similarities(f)], dim=1)


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013, "Maxout networks") over k pieces, applied to a linear layer's
    output h ∈ ℝ^{u·k}: unit j is the largest of its k consecutive pieces,

        y_j = max_{i=0..k-1} h_{j·k+i},   j = 0..u-1,   y ∈ ℝ^u,

    the grouping of TensorFlow's ``maxout`` (reshape to (u, k), max over k), which PacGAN's code uses. A maxout
    layer of u units is ``nn.Linear(n_in, u·k)`` followed by this module; it is the layer's non-linearity (no
    other activation follows). Parameter-free and per-sample, it takes any leading batch axes.
    """

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, h: Tensor) -> Tensor:
        if h.shape[-1] % self.pieces:
            raise ValueError(f"Maxout: {h.shape[-1]} features do not split into units of {self.pieces} pieces")
        return h.unflatten(-1, (h.shape[-1] // self.pieces, self.pieces)).amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class VirtualBatchNorm(nn.Module):
    """Virtual batch normalisation (Salimans et al. 2016, §3.4) of one layer of G.

    A reference batch, fixed once at the start of training, goes through G with every call (its rows
    lead the layer's input ``h``, the first ``n_ref`` of them). Per channel k, with means over the batch
    and the spatial positions:
      reference rows: normalised with the reference batch's own statistics μ_ref, s_ref = E[h²];
      example x: normalised with the statistics of the reference batch ∪ {x}:
        μ = c·μ_x + (1-c)·μ_ref,  s = c·s_x + (1-c)·s_ref,  c = 1/(n_ref + 1),
      where μ_x, s_x are x's own means over its spatial positions (x itself for a vector);
      y = γ·(x - μ)/√(s - μ² + ε) + β.
    Each example's output depends on itself and the reference batch only, never on the other examples
    of its batch. μ and s are exactly the statistics of the union (reference batch ∪ {x}), as REFERENCE.md
    states it; gradients flow through the reference statistics (they are not detached).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def _normalise(self, x: Tensor, mean: Tensor, meansq: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        # E[h²] - E[h]² can round below 0 for a near-constant channel.
        std = torch.sqrt((meansq - mean.square()).clamp_min(0) + self.eps)
        return (x - mean) / std * self.weight.view(shape) + self.bias.view(shape)

    def forward(self, h: Tensor, n_ref: int) -> Tensor:
        spatial = tuple(range(2, h.dim()))
        ref, x = h[:n_ref], h[n_ref:]
        ref_mean = ref.mean((0,) + spatial, keepdim=True)
        ref_sq = ref.square().mean((0,) + spatial, keepdim=True)
        x_mean = x.mean(spatial, keepdim=True) if spatial else x
        x_sq = x.square().mean(spatial, keepdim=True) if spatial else x.square()
        c = 1.0 / (n_ref + 1)
        mean = c * x_mean + (1 - c) * ref_mean
        meansq = c * x_sq + (1 - c) * ref_sq
        return torch.cat([self._normalise(ref, ref_mean, ref_sq), self._normalise(x, mean, meansq)])


def run_with_reference(net: nn.Sequential, h: Tensor, n_ref: int) -> Tensor:
    """``net`` on ``h`` whose first ``n_ref`` rows are the reference batch; VBN layers get ``n_ref``."""
    for layer in net:
        h = layer(h, n_ref) if isinstance(layer, VirtualBatchNorm) else layer(h)
    return h


def reference_latents(n: int, z_dim: int) -> Tensor:
    """The VBN reference batch of latents, z ~ N(0, I), drawn once from a generator of its own seeded from
    the run seed (``torch.initial_seed()``, set by train.seed_everything) + 7919, so that drawing it leaves
    the global RNG stream, and so every other initialisation and the training noise, unchanged."""
    gen = torch.Generator().manual_seed((torch.initial_seed() + 7919) % 2**63)
    return torch.randn(n, z_dim, generator=gen)
