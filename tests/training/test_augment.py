"""Clip augmentation of the pixel trainings (gnvc.training.augment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gnvc.errors import ConfigError
from gnvc.training.augment import CHANNEL_ORDERS, ClipAugment
from gnvc.training.runner import TrainConfig, Trainer


def _trainer(tmp_path: Path, seed: int = 1) -> Trainer:
    lin = torch.nn.Linear(2, 1)
    cfg = TrainConfig(steps=1, lr=1e-3, seed=seed, progress=False, resume=False)
    return Trainer("aug", {"lin": lin}, list(lin.parameters()), cfg, run_dir=tmp_path / f"run{seed}")


def _clips(b: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, 5, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_colors_reorder_each_clips_channels_and_keep_its_values(tmp_path: Path) -> None:
    x = _clips()
    y = ClipAugment(colors=True)(_trainer(tmp_path), x)
    seen = set()
    for i in range(x.shape[0]):
        order = [next(c for c in range(3) if torch.equal(y[i, k], x[i, c])) for k in range(3)]
        assert sorted(order) == [0, 1, 2]  # a permutation of the clip's own channels, nothing mixed
        seen.add(tuple(order))
    assert len(seen) >= 4  # 16 clips draw several of the 6 orders, identity included or not
    assert {tuple(o) for o in CHANNEL_ORDERS.tolist()} >= seen


def test_a_colour_share_recolours_about_that_share_and_true_keeps_the_random_stream(tmp_path: Path) -> None:
    x = torch.rand(600, 3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    changed = (ClipAugment(colors=0.3)(_trainer(tmp_path), x) != x).flatten(1).any(1).float().mean()
    assert 0.18 < changed < 0.32  # 30 % drawn, a sixth of those the identity: 25 % expected
    a, b = _trainer(tmp_path, 5), _trainer(tmp_path, 5)
    ClipAugment(colors=True)(a, x[:4])
    ClipAugment(hflip=True)(b, x[:4])
    assert torch.equal(a.rand((3,)), b.rand((3,)))  # no extra draw: runs with `colors: true` unchanged
    assert ClipAugment.from_section({"augment": {"colors": 0.5}}) == ClipAugment(colors=0.5)
    for bad in (1.5, -0.1, "yes"):
        with pytest.raises(ConfigError, match="share"):
            ClipAugment.from_section({"augment": {"colors": bad}})


def test_flips_and_reversal_are_exact_and_per_clip(tmp_path: Path) -> None:
    x = _clips()
    y = ClipAugment(hflip=True, reverse=True)(_trainer(tmp_path), x)
    kinds = set()
    for i in range(x.shape[0]):
        for h in (False, True):
            for r in (False, True):
                ref = x[i].flip(-1) if h else x[i]
                ref = ref.flip(1) if r else ref
                if torch.equal(y[i], ref):
                    kinds.add((h, r))
    assert len(kinds) == 4


def test_same_generator_same_augmentation_and_nothing_before_from_step(tmp_path: Path) -> None:
    aug = ClipAugment(colors=True, hflip=True, from_step=3)
    x = _clips()
    a, b = _trainer(tmp_path, 5), _trainer(tmp_path, 5)
    assert torch.equal(aug(a, x), x)  # step 0 < from_step: untouched, and nothing drawn
    a.step = b.step = 3
    ya, yb = aug(a, x), aug(b, x)
    assert torch.equal(ya, yb) and not torch.equal(ya, x)
    other = _trainer(tmp_path, 6)
    other.step = 3
    assert not torch.equal(aug(other, x), ya)


def test_config_is_checked() -> None:
    assert ClipAugment.from_section({}) == ClipAugment()
    assert ClipAugment.from_section({"augment": {"colors": True, "from_step": 7}}) == ClipAugment(
        colors=True, from_step=7
    )
    with pytest.raises(ConfigError, match="unknown keys"):
        ClipAugment.from_section({"augment": {"colour": True}})
    with pytest.raises(ConfigError, match="mapping"):
        ClipAugment.from_section({"augment": True})
