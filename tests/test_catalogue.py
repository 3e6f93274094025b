"""Every method of the survey's catalogue runs a few steps on 2-D data and on images, composed the way the
README documents it (objectives on their own; penalties and schemes with objective=vanilla)."""
from __future__ import annotations

import math

import pytest

from conftest import POINTS, load_ckpt, run_train

OBJECTIVES = ["fgan_kl", "fgan_reverse_kl", "fgan_pearson", "fgan_hellinger", "fgan_js", "fgan_gan", "fgan_tv",
              "ebgan", "lsgan_qi", "mdgan", "mixgan", "feature_matching"]
SCHEMES = {
    "roth": ["penalty=roth"],
    "consensus": ["penalty=consensus", "dynamics=simultaneous"],
    "nk": ["penalty=nk"],
    "historical": ["penalty=historical"],
    "simultaneous": ["dynamics=simultaneous"],
    "unrolled": ["dynamics=unrolled", "dynamics.k=2"],
    "instance_noise": ["dynamics.instance_noise=0.1", "dynamics.noise_anneal=true"],
    "label_smoothing": ["objective.real_label=0.9"],
    "minibatch_discrimination": ["arch.minibatch_discrimination=8"],
    "lr_decay": ["train.lr_decay=linear"],
}
CASES = {f"objective={o}": [f"objective={o}"] + (["objective.k=2"] if o == "mixgan" else []) for o in OBJECTIVES}
CASES.update({k: ["objective=vanilla", *v] for k, v in SCHEMES.items()})


def finite_losses(run_dir):
    state = load_ckpt(run_dir)
    for net in ("G", "D"):
        for name, value in state[net].items():
            assert value.float().isfinite().all(), f"{net}.{name}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_runs_on_points(tmp_path, case):
    record = run_train(tmp_path / "run", POINTS + CASES[case] + ["train.iterations=3"])
    assert record["status"] == "completed" and record["step"] == 3
    finite_losses(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES) + ["virtual_batch_norm"])
def test_runs_on_images(tmp_path, image_overrides, case):
    extra = ["objective=vanilla", "arch.g_norm=virtual_batch", "arch.vbn_ref_size=4"] \
        if case == "virtual_batch_norm" else CASES[case]
    record = run_train(tmp_path / "run", image_overrides + extra + ["train.iterations=2"])
    assert record["status"] == "completed" and record["step"] == 2
    finite_losses(tmp_path / "run")
    assert not math.isnan(record["wall_time_s"])


def test_density_plot_feeds_a_batch_coupled_d_training_sized_batches():
    """Minibatch discrimination's pairwise terms need O(batch²) memory: the 25,600-point grid of the density
    plot goes through such a D in batches of 256 (8,192 otherwise)."""
    import torch
    from torch import nn

    from ganbench.run.board import density_figure

    class Recorder(nn.Module):
        def __init__(self, couples: bool):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))
            self.layer = nn.Identity()
            self.layer.couples_batch = couples
            self.sizes = []

        def forward(self, x):
            self.sizes.append(len(x))
            return x @ self.w

    class G0(nn.Module):
        def forward(self, z):
            return z

    for couples, biggest in ((True, 256), (False, 8192)):
        D = Recorder(couples)
        density_figure(G0(), D, torch.zeros(10, 2), torch.ones(10, 2))
        assert max(D.sizes) == biggest and sum(D.sizes) == 160 * 160
