"""DiffAugment (augment=diffaug): each transform against hand-computed outputs, per-run draws, gradients to G."""
from __future__ import annotations

import pytest
import torch

from ganbench.augment import AUGMENTS, build_augment
from ganbench.augment.diffaug import DiffAugment, keep_mask, shift
from ganbench.errors import ConfigError
from ganbench.replicas import SINGLE, Layout


def ramp(h: int = 4, w: int = 4) -> torch.Tensor:
    """One 1-channel image whose pixel (i, j) holds 10·i + j."""
    return (10 * torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)).float().view(1, 1, h, w)


def test_shift_moves_pixels_and_fills_zeros():
    x = ramp()
    out = shift(x, torch.tensor([1]).view(1, 1, 1, 1), torch.tensor([-1]).view(1, 1, 1, 1))
    # out[i, j] = x[i - 1, j + 1]: down one row, left one column, zeros shifted in.
    expected = torch.tensor([[0, 0, 0, 0],
                             [1, 2, 3, 0],
                             [11, 12, 13, 0],
                             [21, 22, 23, 0]]).float()
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(shift(x, torch.zeros(1, 1, 1, 1, dtype=torch.long), torch.zeros(1, 1, 1, 1, dtype=torch.long)), x)


def test_shift_acts_per_sample_and_per_replica():
    x = torch.stack([ramp(), ramp() + 100]).view(2, 1, 1, 4, 4)  # 2 replicas × 1 sample
    dy = torch.tensor([0, 2]).view(2, 1, 1, 1, 1)
    dx = torch.tensor([1, 0]).view(2, 1, 1, 1, 1)
    out = shift(x, dy, dx)
    assert torch.equal(out[0, 0, 0, :, 0], torch.zeros(4)) and torch.equal(out[0, 0, 0, :, 1:], ramp()[0, 0, :, :3])
    assert torch.equal(out[1, 0, 0, :2], torch.zeros(2, 4)) and torch.equal(out[1, 0, 0, 2:], ramp()[0, 0, :2] + 100)


def test_cutout_mask_is_the_box_cut_at_the_border():
    x = torch.ones(2, 3, 4, 4)
    mask = keep_mask(x, torch.tensor([1, -1]).view(2, 1, 1, 1), torch.tensor([0, 3]).view(2, 1, 1, 1), 2, 2)
    assert mask.shape == (2, 1, 4, 4)
    first = torch.ones(4, 4)
    first[1:3, 0:2] = 0
    second = torch.ones(4, 4)
    second[0:1, 3:4] = 0  # rows -1..0 and columns 3..4, cut at the border
    assert torch.equal(mask[0, 0], first) and torch.equal(mask[1, 0], second)


class Fixed(DiffAugment):
    """DiffAugment with chosen draws instead of random ones: uniforms, then integers, in call order."""

    def __init__(self, uniforms, integers, **kwargs):
        super().__init__(**kwargs)
        self._u, self._i = list(uniforms), list(integers)

    def uniform(self, x, layout):
        return torch.full(self._sample_shape(x, layout), self._u.pop(0), dtype=x.dtype)

    def integers(self, x, layout, low, high):
        value = self._i.pop(0)
        assert low <= value < high, (low, value, high)
        return torch.full(self._sample_shape(x, layout), value, dtype=torch.long)


def test_color_by_hand():
    x = torch.tensor([[[[0.2, -0.4]], [[0.0, 0.6]]]])  # (1, 2, 1, 2): 2 channels, 1×2 pixels
    out = Fixed([0.75, 0.25, 1.0], [], policy=["color"])(x)
    b = x + 0.25                                        # brightness: u - 1/2 = 0.25
    m = b.mean(dim=1, keepdim=True)                     # saturation: factor 2u = 0.5 about the channel mean
    s = (b - m) * 0.5 + m
    c = (s - s.mean()) * 1.5 + s.mean()                 # contrast: factor u + 1/2 = 1.5 about the image mean
    assert torch.allclose(out, c)
    # By hand for pixel (0, 0): b = (0.45, 0.25), m = 0.35, s = (0.40, 0.30); s's image mean is
    # (0.40 + 0.30 + s(1,0) + s(1,1))/4 with b = (-0.15, 0.85), m = 0.35, s = (0.10, 0.60): mean 0.35.
    assert torch.allclose(c[0, :, 0, 0], torch.tensor([0.35 + 1.5 * 0.05, 0.35 - 1.5 * 0.05]))


def test_translation_and_cutout_magnitudes_are_the_authors():
    x = torch.ones(1, 1, 32, 32)
    # translation: 1/8 of 32 = 4 pixels at most; cutout: a 16×16 box, offsets in [0, 33).
    aug = Fixed([], [4, -4, 32, 0], policy=["translation", "cutout"])
    out = aug(x)
    expected = shift(x, torch.tensor([4]).view(1, 1, 1, 1), torch.tensor([-4]).view(1, 1, 1, 1))
    expected = expected * keep_mask(x, torch.tensor([32 - 8]).view(1, 1, 1, 1), torch.tensor([0 - 8]).view(1, 1, 1, 1), 16, 16)
    assert torch.equal(out, expected)
    assert out[0, 0, 24:, :8].sum() == 0 and out[0, 0, :4].sum() == 0 and out[0, 0, :, 28:].sum() == 0
    with pytest.raises(AssertionError):  # a shift of 5 is outside [-4, 4]
        Fixed([], [5, 0], policy=["translation"])(x)


def test_random_draws_stay_in_range_and_differ_per_sample():
    torch.manual_seed(0)
    x = torch.ones(256, 1, 16, 16)
    out = DiffAugment(policy=["cutout"])(x)
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() >= 16  # an 8×8 box, cut at most to its quarter at a corner
    assert len(set(zeros.tolist())) > 1


def test_replicas_draw_from_their_own_streams():
    """Replica k's transform is what run k draws alone with its generator: same seed, same augmentation."""
    x = torch.randn(4, 3, 8, 8)
    layout = Layout({"cpu": [torch.Generator().manual_seed(s) for s in (1, 2)]})
    both = DiffAugment()(torch.stack([x, x]), layout)
    for k, seed in enumerate((1, 2)):
        torch.manual_seed(seed)  # a separate run draws from its global RNG
        alone = DiffAugment()(x, SINGLE)
        assert torch.allclose(both[k], alone)
    assert not torch.allclose(both[0], both[1])


def test_gradients_reach_the_generator_through_every_transform():
    G = torch.nn.Linear(4, 3 * 8 * 8)
    fake = G(torch.randn(5, 4)).view(5, 3, 8, 8)
    DiffAugment()(fake).square().sum().backward()
    assert G.weight.grad is not None and G.weight.grad.abs().sum() > 0


def test_config_and_refusals():
    assert set(AUGMENTS) >= {"none", "diffaug"}
    assert build_augment(None).identity and build_augment({"name": "none"}).identity
    aug = build_augment({"name": "diffaug", "policy": ["translation"]})
    assert aug.policy == ["translation"] and not aug.identity
    for node, words in [({"name": "mixup"}, "augment.name: unknown augmentation"),
                        ({"name": "diffaug", "policy": ["color", "rotate"]}, "augment.policy: must be a non-empty list"),
                        ({"name": "diffaug", "cutout_ratio": 1.5}, "augment.cutout_ratio: must be in [0, 1]"),
                        ({"name": "diffaug", "policy": "color"}, "augment.policy")]:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
            build_augment(node)


# ---- in training: every D input, both players' steps, every objective and penalty ----
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
OBJECTIVES = sorted(p.stem for p in (REPO / "conf" / "objective").glob("*.yaml"))
PENALTIES = sorted(p.stem for p in (REPO / "conf" / "penalty").glob("*.yaml"))
NEEDS = {"consensus": ["dynamics=simultaneous"], "weight_clip": ["objective=wgan"]}


def _d_views(monkeypatch):
    """Every batch the game shows D (``Game.noisy``'s outputs: the real batch, the fake batch of the D step and
    of the G step; the penalties read these), in call order."""
    from ganbench.dynamics.base import Game

    seen = []
    noisy = Game.noisy

    def recorded(self, x):
        out = noisy(self, x)
        seen.append(out.detach().clone())
        return out

    monkeypatch.setattr(Game, "noisy", recorded)
    return seen


def _cutout_only(images):
    return images + ["augment=diffaug", "augment.policy=[cutout]", "train.iterations=2"]


@pytest.mark.parametrize("option", [f"objective={o}" for o in OBJECTIVES] + [f"penalty={p}" for p in PENALTIES])
def test_every_objective_and_penalty_trains_on_what_diffaug_shows_d(tmp_path, monkeypatch, image_overrides, option):
    """A cutout box in every batch the game shows D (real and fake, D step and G step; 16×16 images: an 8×8
    box, so at least 16 zero pixels per channel even at a corner), and the run completes."""
    from conftest import run_train

    seen = _d_views(monkeypatch)
    extra = NEEDS.get(option.split("=")[1], [])
    record = run_train(tmp_path / "run", _cutout_only(image_overrides) + [option] + extra)
    assert record["status"] == "completed", record.get("error")
    # Per step: the real batch, the D step's fake, the G step's fake (dynamics=simultaneous: one fake for both).
    per_step = 2 if "dynamics=simultaneous" in extra else 3
    assert len(seen) >= per_step * 2, f"fewer than {per_step} views of D per step"
    for batch in seen:
        zeros = (batch == 0).flatten(2).sum(2)  # per sample and channel
        assert zeros.min() >= 16, f"a batch D saw without its cutout ({option})"


def test_none_shows_d_the_batches_themselves(tmp_path, monkeypatch, image_overrides):
    """augment=none leaves the game as it was: no augmentation object, D's real input is the data's batch."""
    from conftest import FAST, compose
    from ganbench.run.start import prepare

    start = prepare(compose(FAST + image_overrides + ["augment=none"]), tmp_path / "run")
    game = start.game
    assert game.augment is None
    x = torch.randn(4, 3, 16, 16)
    assert game.noisy(x) is x
    state = torch.get_rng_state()
    game.noisy(x)
    assert torch.equal(state, torch.get_rng_state())  # no draw


def test_diffaug_resumes_exactly(tmp_path, image_overrides):
    from conftest import assert_same_tensors, load_ckpt, run_train

    over = image_overrides + ["augment=diffaug", "objective=dragan", "train.ckpt_every=3"]
    run_train(tmp_path / "straight", over + ["train.iterations=6"])
    run_train(tmp_path / "resumed", over + ["train.iterations=3"])
    run_train(tmp_path / "resumed", over + ["train.iterations=6"])
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "resumed")
    for key in ("G", "D", "opt_G", "opt_D", "rng", "step"):
        assert_same_tensors(a[key], b[key], key)


def test_diffaug_replicas_follow_their_separate_runs(tmp_path, image_overrides):
    from test_replicas import max_rel_diff, replicas_and_separate_runs

    over = image_overrides + ["augment=diffaug", "objective=dragan", "train.iterations=6", "train.ckpt_every=6"]
    for seed, a, b in replicas_and_separate_runs(tmp_path, over, (0, 1)):
        assert max_rel_diff(a["G"], b["G"]) < 1e-5 and max_rel_diff(a["D"], b["D"]) < 1e-5, seed
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the same draws, from each run's stream
