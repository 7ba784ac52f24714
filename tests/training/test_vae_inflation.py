"""Temporal inflation: the clip phase of the VAE training starts from the image VAE applied per frame."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gnvc.models.vae import VideoVAE
from gnvc.training.runner import TrainConfig, Trainer

from .conftest import TEST_PROFILE


def _vae(seed: int = 0) -> VideoVAE:
    torch.manual_seed(seed)
    return VideoVAE.from_config(TEST_PROFILE["vae"]).eval()


@torch.no_grad()
def test_inflated_vae_codes_a_still_video_as_its_first_frame() -> None:
    vae = _vae()
    vae.inflate_temporal()
    frame = torch.rand(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    still = frame.expand(1, 3, 9, 32, 32).contiguous()
    z = vae.vae.encode(still).latent_dist.mode()
    z1 = vae.vae.encode(frame).latent_dist.mode()
    assert z.shape[2] == 3
    for t in range(3):  # every latent frame is the image latent of the (repeated) frame
        torch.testing.assert_close(z[:, :, t], z1[:, :, 0], rtol=1e-4, atol=1e-5)
    y = vae.vae.decode(z).sample
    y1 = vae.vae.decode(z1).sample
    for t in range(9):  # and decodes to the image reconstruction in every frame
        torch.testing.assert_close(y[:, :, t], y1[:, :, 0], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_inflation_keeps_the_intra_path_and_changes_the_temporal_one() -> None:
    vae = _vae()
    frame = torch.rand(1, 3, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    clip = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    before_img = vae.vae.encode(frame).latent_dist.mode()
    before_clip = vae.vae.encode(clip).latent_dist.mode()
    assert vae.inflate_temporal() > 0
    torch.testing.assert_close(vae.vae.encode(frame).latent_dist.mode(), before_img)  # frame 1 untouched
    after_clip = vae.vae.encode(clip).latent_dist.mode()
    torch.testing.assert_close(after_clip[:, :, 0], before_clip[:, :, 0])
    assert not torch.allclose(after_clip[:, :, 1], before_clip[:, :, 1])  # the random temporal path is gone


class _Crash(Exception):
    pass


def _phase_run(run_dir: Path, steps: int, crash_at: int | None = None) -> tuple[torch.nn.Module, list[float], Trainer]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 1)
    cfg = TrainConfig(steps=steps, lr=1e-2, warmup_steps=2, checkpoint_every=3, seed=1, progress=False)
    tr = Trainer("phase", {"lin": lin}, list(lin.parameters()), cfg, run_dir=run_dir)
    tr.new_phase(4, 3)
    lrs: list[float] = []

    def step(t: Trainer) -> dict[str, torch.Tensor]:
        if crash_at is not None and t.step == crash_at:
            raise _Crash
        if t.step == 4:
            t.reset_optimizer()
        lrs.append(t.optimizer.param_groups[0]["lr"])
        x = t.randn((8, 4))
        return {"loss": (lin(x) - x.sum(1, keepdim=True)).pow(2).mean()}

    tr.fit(step)
    return lin, lrs, tr


def test_a_new_phase_warms_the_lr_up_again_and_resumes_exactly(tmp_path: Path) -> None:
    lin, lrs, tr = _phase_run(tmp_path / "a", 9)
    base = [1e-2 * tr._schedule(s) for s in range(9)]
    for s, frac in ((4, 1 / 3), (5, 2 / 3), (6, 1.0), (3, 1.0), (8, 1.0)):  # steps 4-6 warm up again
        assert abs(lrs[s] - frac * base[s]) < 1e-9, (s, lrs[s], base[s])
    # Checkpoints every 3 steps: a crash at 5 resumes from 3 (before the switch), at 7 from 6 (after it).
    for crash_at in (5, 7):
        with pytest.raises(_Crash):
            _phase_run(tmp_path / f"b{crash_at}", 9, crash_at=crash_at)
        resumed, _, _ = _phase_run(tmp_path / f"b{crash_at}", 9)
        for p, q in zip(lin.parameters(), resumed.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
