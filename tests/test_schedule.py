"""train.lr_decay: every player's learning rate follows the step, so a resumed run continues the schedule."""
from __future__ import annotations

import pytest

from conftest import POINTS, compose, load_ckpt, run_train
from toy_game import assert_resumes_exactly


@pytest.mark.parametrize("step,factor", [(0, 1.0), (5, 1.0), (6, 1.0), (7, 5 / 6), (9, 0.5), (11, 1 / 6), (12, 0.0)])
def test_linear_factor_by_hand(step, factor):
    from ganbench.run.loop import lr_factor

    # T = 12, decay from 0.5·T = 6: (12 - step) / 6 after step 6
    assert lr_factor(step, 12, "linear", 0.5) == pytest.approx(factor)
    assert lr_factor(step, 12, "none", 0.5) == 1.0


def test_every_optimizer_follows_the_schedule(tmp_path):
    over = POINTS + ["objective=dragan", "train.iterations=8", "train.lr_decay=linear", "train.lr_decay_start=0.5"]
    run_train(tmp_path / "run", over)
    state = load_ckpt(tmp_path / "run")
    # the last step (index 7) ran at factor (8 - 7) / 4 = 0.25 of the recipe's lr 1e-4
    for opt in ("opt_G", "opt_D"):
        assert state[opt]["param_groups"][0]["lr"] == pytest.approx(0.25e-4)
    plain = run_train(tmp_path / "plain", POINTS + ["objective=dragan", "train.iterations=8"])
    assert plain["status"] == "completed"
    assert load_ckpt(tmp_path / "plain")["opt_G"]["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_decay_resumes_exactly(tmp_path, monkeypatch):
    assert_resumes_exactly(tmp_path, monkeypatch, POINTS + ["train.lr_decay=linear", "train.lr_decay_start=0"])


def test_bad_schedule_is_one_line():
    from ganbench.config import validate
    from ganbench.errors import ConfigError

    with pytest.raises(ConfigError, match="train.lr_decay: unknown option 'cosine'; allowed: none, linear"):
        validate(compose(POINTS + ["train.lr_decay=cosine"]))
    with pytest.raises(ConfigError, match=r"train.lr_decay_start: must be in \[0, 1\)"):
        validate(compose(POINTS + ["train.lr_decay_start=1.5"]))
