"""Temporal inflation: the clip phase of the VAE training starts from the image VAE applied per frame."""

from __future__ import annotations

import torch

from gnvc.models.vae import VideoVAE

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
