"""Each training objective goes down under a few optimisation steps on a fixed batch.

The models are the real classes (AutoencoderKLWan, the contextual codec, WanTransformer3DModel
with the adapter) at small widths; the LPIPS is the real offline LPIPS-AlexNet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from gnvc.models.model_dir import GnvcModel
from gnvc.refiner import Refiner
from gnvc.refiner.flow import target_velocity
from gnvc.training.losses import (
    bits_per_pixel,
    cfm_loss,
    codec_losses,
    coded_latents,
    decoder_losses,
    flow_matching_loss,
    pixels_of_latents,
    stage1_losses,
    stage2_losses,
    temporal_mse,
    vae_latent_shape,
    vae_losses,
)


def _video(seed: int = 0, frames: int = 5, size: int = 32) -> torch.Tensor:
    """Smooth moving gradients in [-1, 1]: structured enough for a VAE to fit quickly."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames).view(1, 1, frames, 1, 1).float()
    y = torch.linspace(-1, 1, size).view(1, 1, 1, size, 1)
    x = torch.linspace(-1, 1, size).view(1, 1, 1, 1, size)
    phase = torch.rand(2, 3, 1, 1, 1, generator=g) * 6
    return torch.sin(3 * x + 2 * y + 0.3 * t + phase).clamp(-1, 1) * 0.9


def _descends(
    loss_fn: Callable[[], dict[str, torch.Tensor]], params: list[torch.nn.Parameter], steps: int, lr: float
) -> tuple[dict[str, float], dict[str, float]]:
    opt = torch.optim.Adam(params, lr=lr)
    first: dict[str, float] = {}
    for i in range(steps):
        opt.zero_grad()
        losses = loss_fn()
        if i == 0:
            first = {k: float(v.detach()) for k, v in losses.items()}
        losses["loss"].backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in loss_fn().items()}
    return first, last


@pytest.fixture
def model(test_profile: dict[str, Any]) -> GnvcModel:
    return GnvcModel.from_profile(test_profile, seed=0)


def test_vae_loss_descends(model: GnvcModel) -> None:
    from gnvc.metrics.lpips_metric import lpips_model

    video = _video()
    eps = torch.randn(vae_latent_shape(video, 16), generator=torch.Generator().manual_seed(1))
    net = lpips_model("alex", "cpu")

    def fn() -> dict[str, torch.Tensor]:
        return vae_losses(model.vae, video, eps, kl_weight=1e-3, lpips_weight=0.1, lpips_net=net)

    first, last = _descends(fn, list(model.vae.parameters()), 12, 2e-3)
    assert last["loss"] < first["loss"]
    assert last["mse"] < first["mse"]
    assert last["lpips"] < first["lpips"]


def test_prior_flow_matching_loss_descends(refiner_cfg: dict[str, Any]) -> None:
    refiner = Refiner.from_config(refiner_cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(2, 16, 2, 4, 4, generator=g), torch.randn(2, 16, 2, 4, 4, generator=g)
    t = torch.tensor([0.75, 0.9])
    first, last = _descends(
        lambda: {"loss": flow_matching_loss(refiner, x1, x0, t)}, refiner.set_tuning("full"), 15, 3e-3
    )
    assert last["loss"] < 0.9 * first["loss"]


def test_cfm_loss_trains_the_adapter_alone(refiner_cfg: dict[str, Any]) -> None:
    """With the DiT frozen, the zero-initialised adapter alone reduces the CFM loss."""
    refiner = Refiner.from_config(refiner_cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 16, 2, 4, 4, generator=g)
    x_c = x1 + 0.5 * torch.randn(2, 16, 2, 4, 4, generator=g)
    ctx = x_c.clone()  # context that carries x_c (as the codec's does)
    x0, tau = torch.randn(2, 16, 2, 4, 4, generator=g), torch.tensor([0.7, 0.85])
    params = refiner.set_tuning("frozen")
    dit_before = {k: v.clone() for k, v in refiner.transformer.state_dict().items()}
    first, last = _descends(lambda: {"loss": cfm_loss(refiner, x1, x_c, ctx, x0, tau, 0.7)}, params, 15, 3e-3)
    assert last["loss"] < 0.95 * first["loss"]
    for k, v in refiner.transformer.state_dict().items():
        assert torch.equal(v, dit_before[k])


def test_cfm_loss_is_zero_for_the_ideal_velocity(refiner_cfg: dict[str, Any]) -> None:
    """L_CFM measures the distance to v_τ: a model outputting exactly v_τ scores zero."""
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    x_c = x1 + 0.3 * torch.randn(1, 16, 2, 4, 4, generator=g)
    v = target_velocity(x1, x0, x_c, 0.7)

    class Ideal(Refiner):
        def velocity(self, x_t, t, context=None):  # noqa: ANN001, ANN201
            return v

    ideal = Ideal.from_config(refiner_cfg, seed=0)
    loss = cfm_loss(ideal, x1, x_c, None, x0, torch.tensor([0.8]), 0.7)
    assert float(loss) < 1e-12


def test_stage1_losses_descend(model: GnvcModel) -> None:
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 16, 3, 4, 4, generator=g)
    q = torch.tensor([0, 2])
    x0, tau = torch.randn(x1.shape, generator=g), torch.tensor([0.75, 0.95])
    lambdas = torch.tensor([1.0, 4.0, 16.0])
    model.codec.requires_grad_(True)
    params = list(model.codec.parameters()) + model.refiner.set_tuning("frozen")

    def fn() -> dict[str, torch.Tensor]:
        return stage1_losses(
            model.codec, model.refiner, x1, q, x0, tau, lambdas, t_n=0.7, steps=3, codec_mse_weight=1.0
        )

    first, last = _descends(fn, params, 15, 2e-3)
    for k in ("loss", "rd", "aux", "mse_refined", "mse_codec", "cfm"):
        assert last[k] < first[k], (k, first[k], last[k])


def test_codec_losses_descend_and_are_the_rd_objective(model: GnvcModel) -> None:
    """The codec warm-up objective: R + λ_q·‖x_c − x1‖² per sample, the codec alone."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 16, 3, 4, 4, generator=g)
    q = torch.tensor([0, 2])
    lambdas = torch.tensor([1.0, 4.0, 16.0])
    model.codec.requires_grad_(True)
    with torch.no_grad():
        out = model.codec(x1, q)
        expected = bits_per_pixel(out.bits, x1) + lambdas[q] * (out.latents_hat - x1).square().flatten(1).mean(1)
        got = codec_losses(model.codec, x1, q, lambdas)
    assert torch.allclose(got["rd"], expected.mean())
    assert set(got) == {"loss", "rd", "aux", "bpp", "mse_codec"}  # nothing of the refiner

    first, last = _descends(lambda: codec_losses(model.codec, x1, q, lambdas), list(model.codec.parameters()), 15, 2e-3)
    for k in ("loss", "rd", "mse_codec"):
        assert last[k] < first[k], (k, first[k], last[k])


def test_stage2_losses_descend(model: GnvcModel) -> None:
    from gnvc.metrics.lpips_metric import lpips_model

    video = _video(frames=5, size=32)
    q = torch.tensor([1, 2])
    x0 = torch.randn(vae_latent_shape(video, 16), generator=torch.Generator().manual_seed(2))
    lambdas = torch.tensor([1.0, 4.0, 16.0])
    model.vae.requires_grad_(False)
    model.codec.requires_grad_(True)
    model.refiner.checkpoint_steps = True
    params = list(model.codec.parameters()) + model.refiner.set_tuning("frozen")
    net = lpips_model("alex", "cpu")

    def fn() -> dict[str, torch.Tensor]:
        return stage2_losses(model.codec, model.refiner, model.vae, video, q, x0, lambdas, net, t_n=0.7, steps=2)

    first, last = _descends(fn, params, 12, 2e-3)
    assert last["loss"] < first["loss"]
    assert last["lpips"] < first["lpips"]
    assert last["aux"] < first["aux"]
    assert last["mse_refined"] < first["mse_refined"]
    assert last["mse_pixels"] < first["mse_pixels"]
    # (‖x_c − x1‖² may rise while the refined output improves: the terms trade off within λ_q.)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.vae.parameters())


def _decoder_setup(model: GnvcModel) -> tuple[torch.Tensor, Callable[[], dict[str, torch.Tensor]], list, Any]:
    """A clip, what the frozen coding loop delivers for it (one sample refined, one not), the
    decoder's parameters (the only ones that train) and LPIPS-Alex."""
    from gnvc.metrics.lpips_metric import lpips_model

    video = _video(frames=5, size=32)
    q, refine = torch.tensor([0, 2]), torch.tensor([True, False])
    x0 = torch.randn(vae_latent_shape(video, 16), generator=torch.Generator().manual_seed(3))
    model.requires_grad_(False)
    model.codec.eval()
    decoder = list(model.vae.vae.decoder.parameters()) + list(model.vae.vae.post_quant_conv.parameters())
    for p in decoder:
        p.requires_grad_(True)

    def coded() -> dict[str, torch.Tensor]:
        return coded_latents(model.codec, model.refiner, model.vae, video, q, x0, refine, t_n=0.7, steps=2)

    return video, coded, decoder, lpips_model("alex", "cpu")


def test_decoder_losses_train_the_decoder_alone(model: GnvcModel) -> None:
    video, coded, decoder, net = _decoder_setup(model)
    first, last = _descends(lambda: decoder_losses(model.vae, video, coded(), net), decoder, 10, 2e-3)
    assert last["loss"] < first["loss"] and last["mse_pixels"] < first["mse_pixels"]
    assert last["bpp"] == first["bpp"] and last["mse_codec"] == first["mse_codec"]  # the coding is fixed
    assert first["refined"] == 0.5


def test_temporal_mse_sees_flicker_that_per_frame_errors_do_not() -> None:
    """Two decodings with the same per-frame error: a steady offset (no flicker) costs nothing, an
    offset whose sign alternates frame to frame (flicker) does; one frame has no temporal term."""
    video = _video(frames=5, size=16)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]).view(1, 1, 5, 1, 1)
    steady, flicker = video + 0.1, video + 0.1 * sign
    torch.testing.assert_close((steady - video).square().mean(), (flicker - video).square().mean())
    torch.testing.assert_close(temporal_mse(steady, video), torch.zeros(2))
    torch.testing.assert_close(temporal_mse(flicker, video), torch.full((2,), 0.04))
    assert temporal_mse(flicker[:, :, :1], video[:, :, :1]).eq(0).all()


def test_decoder_losses_temporal_weight_lowers_flicker(model: GnvcModel) -> None:
    video, coded, decoder, net = _decoder_setup(model)
    fixed = coded()

    def fn() -> dict[str, torch.Tensor]:
        return decoder_losses(model.vae, video, fixed, net, lpips_weight=0.0, temporal_weight=10.0)

    first, last = _descends(fn, decoder, 10, 2e-3)
    assert last["mse_temporal"] < first["mse_temporal"]
    torch.testing.assert_close(
        torch.tensor(first["loss"]), torch.tensor(first["mse_pixels"] + 10.0 * first["mse_temporal"])
    )


def test_rate_is_per_pixel() -> None:
    latents = torch.zeros(2, 16, 3, 4, 6)
    assert pixels_of_latents(latents) == 9 * 32 * 48
    torch.testing.assert_close(bits_per_pixel(torch.tensor([9 * 32 * 48.0, 0.0]), latents), torch.tensor([1.0, 0.0]))
