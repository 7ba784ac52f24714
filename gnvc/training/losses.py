"""The losses of the four trainings, as plain functions of tensors (randomness passed in).

Passing x0, t and the quality indices in (instead of drawing them here) keeps every loss a pure
function: the runner's generator draws them, so a resumed run draws the same ones, and tests
can hold them fixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gnvc.codec.entropy import NoiseFn
from gnvc.refiner.flow import interpolate, start_point, straight_path, target_velocity
from gnvc.refiner.model import Refiner

SPATIAL_FACTOR = 8
TEMPORAL_FACTOR = 4


def pixels_of_latents(latents: torch.Tensor) -> int:
    """Pixels per sequence that latents (B, C, F, h, w) stand for: (1 + 4(F − 1))·8h·8w."""
    f, h, w = latents.shape[2:]
    return (1 + TEMPORAL_FACTOR * (f - 1)) * SPATIAL_FACTOR * h * SPATIAL_FACTOR * w


def vae_latent_shape(video: torch.Tensor, channels: int) -> tuple[int, int, int, int, int]:
    """Latent shape (B, C, 1 + (T − 1)/4, H/8, W/8) of pixels (B, 3, T, H, W)."""
    b, _, t, h, w = video.shape
    return (b, channels, 1 + (t - 1) // TEMPORAL_FACTOR, h // SPATIAL_FACTOR, w // SPATIAL_FACTOR)


def bits_per_pixel(bits: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """R(ŷ) per sequence in bits per pixel, (B,): rate terms comparable across crop sizes."""
    return bits / pixels_of_latents(latents)


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each batch element, (B,)."""
    return (a.float() - b.float()).square().flatten(1).mean(1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) per latent element, averaged (the VAE's KL term)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def flow_matching_loss(refiner: Refiner, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The unconditional prior's loss: ‖v_θ(x_t, t) − (x1 − x0)‖², x_t = t·x1 + (1 − t)·x0."""
    x_t = interpolate(x0, x1, t)
    v = refiner.velocity(x_t, t, None)
    return F.mse_loss(v.float(), (x1 - x0).float())


def cfm_loss(
    refiner: Refiner,
    x1: torch.Tensor,
    x_c: torch.Tensor,
    context: torch.Tensor,
    x0: torch.Tensor,
    tau: torch.Tensor,
    t_n: float,
) -> torch.Tensor:
    """Stage I's conditional flow matching on the straight path from x_{tN} to x1.

    At τ ∈ [tN, 1] on x_τ = x_{tN} + (τ − tN)·v_τ the model must predict the constant
    v_τ = (x1 − x0) − tN/(1 − tN)·(x_c − x1); integrating it lands exactly on x1.
    """
    v_target = target_velocity(x1, x0, x_c, t_n)
    x_tau = straight_path(start_point(x_c, x0, t_n), v_target, t_n, tau)
    v = refiner.velocity(x_tau, tau, context)
    return F.mse_loss(v.float(), v_target.float())


def frames_2d(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) → (B·T, 3, H, W), for image metrics applied per frame."""
    b, c, t, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def lpips_per_sample(lpips_net: torch.nn.Module, ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Mean per-frame LPIPS of each sequence, (B,); videos in [-1, 1] (LPIPS's own input range)."""
    b, t = ref.shape[0], ref.shape[2]
    d = lpips_net(frames_2d(ref.float()), frames_2d(out.float()))
    return d.reshape(b, t).mean(1)


# ---------------------------------------------------------------------------------------------
# One function per training objective: the stages call these with their batches and random
# draws; the tests call the same functions on fixed batches.
# ---------------------------------------------------------------------------------------------
def vae_losses(
    vae: torch.nn.Module,
    video: torch.Tensor,
    eps: torch.Tensor | None,
    *,
    kl_weight: float,
    lpips_weight: float,
    lpips_net: torch.nn.Module | None,
    recon_loss: str = "mse",
) -> dict[str, torch.Tensor]:
    """rec(V, D(z)) + β·KL + λ_lpips·LPIPS, z = μ + σ·eps from the posterior (``eps`` None: z = μ).

    ``recon_loss``: ``mse`` (‖V − V~‖²) or ``l1`` (|V − V~|, sharper and faster to fit from scratch);
    the returned ``mse`` is always reported.

    ``vae`` is a :class:`gnvc.models.vae.VideoVAE`; its raw AutoencoderKLWan is used so the
    reconstruction is not clamped (the clamp would zero the gradient of saturated pixels).
    """
    posterior = vae.vae.encode(video).latent_dist
    z = posterior.mean if eps is None else posterior.mean + posterior.std * eps
    recon = vae.vae.decode(z).sample
    mse = F.mse_loss(recon.float(), video.float())
    kl = gaussian_kl(posterior.mean.float(), posterior.logvar.float())
    out = {"mse": mse, "kl": kl}
    if recon_loss == "l1":
        out["l1"] = F.l1_loss(recon.float(), video.float())
        loss = out["l1"] + kl_weight * kl
    elif recon_loss == "mse":
        loss = mse + kl_weight * kl
    else:
        raise ValueError(f"recon_loss must be 'mse' or 'l1', got {recon_loss!r}")
    if lpips_net is not None and lpips_weight > 0:
        lp = lpips_net(frames_2d(video.float()), frames_2d(recon.float().clamp(-1, 1))).mean()
        out["lpips"] = lp
        loss = loss + lpips_weight * lp
    out["loss"] = loss
    return out


def with_aux_loss(codec: torch.nn.Module, rd: torch.Tensor, **logged: torch.Tensor) -> dict[str, torch.Tensor]:
    """``loss`` = the rate-distortion objective + CompressAI's auxiliary loss; the rest detached means.

    The auxiliary loss moves only the factorized prior's quantiles (the range its integer CDF
    tables cover after ``update()``), so adding it leaves the RD gradients untouched.
    """
    aux = codec.aux_loss()
    return {
        "loss": rd + aux,
        "rd": rd.detach(),
        "aux": aux.detach(),
        **{k: v.detach().mean() for k, v in logged.items()},
    }


def codec_losses(
    codec: torch.nn.Module,
    x1: torch.Tensor,
    quality: torch.Tensor,
    lambdas: torch.Tensor,
    *,
    noise: NoiseFn | None = None,
) -> dict[str, torch.Tensor]:
    """Stage I's codec warm-up: R(ŷ) + λ_q·‖x_c − x1‖², the codec alone (the refiner is not run).

    A from-scratch codec learns ~13× faster per second this way than through the five refinement
    steps (0.34 s against 4.4 s per batch of 8 on the 2-core CPU), and the refinement's objective
    starts from a codec whose contexts carry the video (docs/training.md).
    """
    out = codec(x1, quality, noise=noise)
    rate = bits_per_pixel(out.bits, x1)
    d_c = per_sample_mse(out.latents_hat, x1)
    rd = (rate + lambdas[quality] * d_c).mean()
    return with_aux_loss(codec, rd, bpp=rate, mse_codec=d_c)


def stage1_losses(
    codec: torch.nn.Module,
    refiner: Refiner,
    x1: torch.Tensor,
    quality: torch.Tensor,
    x0: torch.Tensor,
    tau: torch.Tensor,
    lambdas: torch.Tensor,
    *,
    t_n: float,
    steps: int,
    codec_mse_weight: float = 0.0,
    cfm_weight: float = 1.0,
    noise: NoiseFn | None = None,
) -> dict[str, torch.Tensor]:
    """Stage I: R(ŷ) + λ_q·(‖x~1 − x1‖² + w_c·‖x_c − x1‖²) + w_cfm·L_CFM (see ``gnvc.stages.stage1``).

    ``loss`` adds the auxiliary loss (:func:`with_aux_loss`); ``rd`` is the objective without it.
    ``noise``: the codec's quantisation noise source (the trainer's per-sample draw).
    """
    out = codec(x1, quality, noise=noise)
    x_c, context = out.latents_hat, out.context
    rate = bits_per_pixel(out.bits, x1)
    x_ref = refiner.integrate(start_point(x_c, x0, t_n), context, t_n=t_n, steps=steps)
    d_ref, d_c = per_sample_mse(x_ref, x1), per_sample_mse(x_c, x1)
    # x_c enters the CFM target: detached, so the codec is not pulled towards an easy target.
    cfm = cfm_loss(refiner, x1, x_c.detach(), context, x0, tau, t_n)
    lam = lambdas[quality]
    rd = (rate + lam * (d_ref + codec_mse_weight * d_c)).mean() + cfm_weight * cfm
    return with_aux_loss(codec, rd, bpp=rate, mse_refined=d_ref, mse_codec=d_c, cfm=cfm)


def stage2_losses(
    codec: torch.nn.Module,
    refiner: Refiner,
    vae: torch.nn.Module,
    video: torch.Tensor,
    quality: torch.Tensor,
    x0: torch.Tensor,
    lambdas: torch.Tensor,
    lpips_net: torch.nn.Module,
    *,
    t_n: float,
    steps: int,
    lpips_weight: float = 1.0,
    checkpoint_decoder: bool = True,
    noise: NoiseFn | None = None,
) -> dict[str, torch.Tensor]:
    """Stage II: R(ŷ) + λ_q·(‖V − V~‖² + λ_lpips·LPIPS + ‖x_c − x1‖² + ‖x~1 − x1‖²), x1 = E(V).

    ``vae`` is a :class:`gnvc.models.vae.VideoVAE` (frozen); its decoder is checkpointed because
    it does not support diffusers' gradient checkpointing. ``loss`` adds the quantiles' auxiliary
    loss as in Stage I.
    """
    with torch.no_grad():
        x1 = vae.encode(video)
    out = codec(x1, quality, noise=noise)
    x_c, context = out.latents_hat, out.context
    rate = bits_per_pixel(out.bits, x1)
    x_ref = refiner.integrate(start_point(x_c, x0, t_n), context, t_n=t_n, steps=steps)
    d_pix, d_lp, _ = pixel_distortion(vae, x_ref, video, lpips_net, checkpoint_decoder=checkpoint_decoder)
    d_c, d_ref = per_sample_mse(x_c, x1), per_sample_mse(x_ref, x1)
    lam = lambdas[quality]
    rd = (rate + lam * (d_pix + lpips_weight * d_lp + d_c + d_ref)).mean()
    return with_aux_loss(codec, rd, bpp=rate, mse_pixels=d_pix, lpips=d_lp, mse_codec=d_c, mse_refined=d_ref)


def temporal_mse(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """‖ΔD − ΔV‖² per sample, Δ the difference of consecutive frames of (B, 3, T, H, W) clips (0
    for one frame).

    Flicker is frame-to-frame change the source does not have; matching the decoded clip's
    temporal differences to the source's penalises it without an optical flow (E_warp, which the
    model card reports, measures the same thing along the source's flow). A per-frame loss alone
    lets each frame err its own way: the base release's decoder fine-tune, trained on MSE and
    LPIPS, sharpened frames and raised E_warp by 15-27 %."""
    if recon.shape[2] < 2:
        return recon.new_zeros(recon.shape[0])
    return per_sample_mse(recon.diff(dim=2), video.diff(dim=2))


def pixel_distortion(
    vae: torch.nn.Module,
    latents: torch.Tensor,
    video: torch.Tensor,
    lpips_net: torch.nn.Module,
    *,
    checkpoint_decoder: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(‖V − D(latents)‖², LPIPS(V, D(latents)), :func:`temporal_mse`) per sample. The decoder is
    checkpointed as one unit when gradients flow (it does not support diffusers' gradient
    checkpointing)."""
    if checkpoint_decoder and torch.is_grad_enabled():
        recon = checkpoint(vae.decode, latents, use_reentrant=False)
    else:
        recon = vae.decode(latents)
    return per_sample_mse(recon, video), lpips_per_sample(lpips_net, video, recon), temporal_mse(recon, video.float())


@torch.no_grad()
def coded_latents(
    codec: torch.nn.Module,
    refiner: Refiner,
    vae: torch.nn.Module,
    video: torch.Tensor,
    quality: torch.Tensor,
    x0: torch.Tensor,
    refine: torch.Tensor,
    *,
    t_n: float,
    steps: int,
) -> dict[str, torch.Tensor]:
    """What the frozen coding loop delivers for ``video``: the hard-rounded codec latents x_c,
    refined into x~1 where ``refine`` (B,) is true and left as x_c elsewhere (``latents``), with
    the rate and the codec's latent error per sample. The codec must be in eval mode."""
    x1 = vae.encode(video)
    out = codec(x1, quality)
    x_c = out.latents_hat
    x_ref = refiner.integrate(start_point(x_c, x0, t_n), out.context, t_n=t_n, steps=steps)
    return {
        "latents": torch.where(refine.view(-1, 1, 1, 1, 1), x_ref, x_c),
        "bpp": bits_per_pixel(out.bits, x1),
        "mse_codec": per_sample_mse(x_c, x1),
        "refined": refine.float(),
    }


def decoder_losses(
    vae: torch.nn.Module,
    video: torch.Tensor,
    coded: dict[str, torch.Tensor],
    lpips_net: torch.nn.Module,
    *,
    lpips_weight: float = 1.0,
    temporal_weight: float = 0.0,
    checkpoint_decoder: bool = True,
) -> dict[str, torch.Tensor]:
    """Stage II with the codec and the refiner frozen: ‖V − D(x̂)‖² + λ_lpips·LPIPS(V, D(x̂)) +
    λ_temporal·‖ΔD(x̂) − ΔV‖² (:func:`temporal_mse`), mean.

    Only the VAE decoder trains (``trainable: [vae_decoder]``): it learns to decode the latents the
    coding loop really delivers (:func:`coded_latents`: refined and unrefined, so both decoding
    modes are served) instead of the clean posterior means it was trained on. The encoder, codec
    and refiner are untouched, so streams, rates and the P-chain stay exactly those of the input
    model. Every quality index weighs alike (no λ_q: the rate is fixed, and one decoder serves all).
    """
    d_pix, d_lp, d_t = pixel_distortion(vae, coded["latents"], video, lpips_net, checkpoint_decoder=checkpoint_decoder)
    loss = (d_pix + lpips_weight * d_lp + temporal_weight * d_t).mean()
    logged = {
        "mse_pixels": d_pix, "lpips": d_lp, "mse_temporal": d_t, **{k: v for k, v in coded.items() if k != "latents"}
    }  # fmt: skip
    return {"loss": loss, **{k: v.detach().mean() for k, v in logged.items()}}
