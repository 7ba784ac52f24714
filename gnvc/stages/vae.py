"""Stage ``vae``: train the 3D causal VAE (tiny/small), or import the user's Wan2.1 VAE.

Writes a complete model directory (``vae.output``, default ``build/<profile>/vae``) whose VAE
carries the per-channel statistics of its own latents (``latents_mean/std``), so every later
stage works on unit-scale normalised latents, as with the real Wan2.1 VAE. The codec and the
refiner in that directory are the profile's fresh ones (trained by later stages).

Loss: rec(V, V~) + λ_lpips·LPIPS(V, V~) + β·KL(q(z|V) ‖ N(0, I)) (rec: L1 by default, or
‖V − V~‖²), with z sampled from the posterior (reparameterised, noise from the runner's generator)
so the decoder learns to tolerate the perturbations the latent codec will add. Training crops are
small (the VAE is convolutional; 32×32×5 crops train ~4× faster per step than 64×64×9 on a CPU),
and the first ``image_steps`` steps train on single frames (see ``run``). ``augment`` permutes the
colour channels, flips and reverses clips (gnvc.training.augment: the few real training videos
have almost no green, and a VAE never shown green cannot code it). The learning rate matters:
at 2e-3 the tiny AutoencoderKLWan collapses to a constant output (the decoder learns to ignore z);
3e-4 to 4e-4 trains.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from gnvc.errors import ConfigError
from gnvc.models.model_dir import GnvcModel
from gnvc.models.vae import VideoVAE
from gnvc.training.augment import ClipAugment
from gnvc.training.common import (
    clip_settings,
    clip_stream,
    clip_stream_factory,
    finish_model,
    import_required,
    make_trainer,
    profile_name,
    stage_path,
    stage_result,
    stage_section,
)
from gnvc.training.losses import vae_latent_shape, vae_losses
from gnvc.training.runner import Trainer


def import_vae(path: Path) -> VideoVAE:
    """The user's diffusers ``AutoencoderKLWan``: a repo root with ``vae/`` or the ``vae`` folder itself."""
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"vae.import_from={path}: no AutoencoderKLWan there (expected config.json + safetensors, "
            "e.g. the vae/ folder of Wan2.1-T2V-1.3B-Diffusers)"
        )
    return VideoVAE.from_pretrained(path)


@torch.no_grad()
def latent_statistics(vae: VideoVAE, batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the raw (un-normalised) posterior means over ``batches``.

    With one torch thread and float64 sums: the encoder's reductions round differently with the
    thread count, and these statistics go into the model's config, hence its weights hash. A
    stage rebuilt from a committed export must give the same model whatever ``OMP_NUM_THREADS``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            zs = [vae.vae.encode(x).latent_dist.mode().transpose(0, 1).flatten(1).double() for x in batches]
    finally:
        torch.set_num_threads(threads)
    z = torch.cat(zs, dim=1)
    return z.mean(1).float(), z.std(1).clamp_min(1e-4).float()


def run(params: dict[str, Any]) -> dict[str, Any]:
    section = stage_section(params, "vae")
    output = stage_path(params, section, "output", "build/{profile}/vae")
    if import_required(params, section):
        src = section.get("import_from")
        if not src:
            raise ConfigError(
                f"profile {profile_name(params)!r} imports its VAE: set vae.import_from in params.yaml "
                "to a local directory with the Wan2.1 VAE (diffusers layout); nothing is downloaded"
            )
        vae = import_vae(Path(str(src)))  # checked before the (large) rest of the model is built
        model = GnvcModel.from_profile(profile_name(params), seed=int(section["seed"]))
        model.vae = vae
        model.profile["vae"] = {k: v for k, v in model.vae.vae.config.items() if not k.startswith("_")}
        return {"imported_from": str(src), "weights_hash": finish_model(model, output)}

    model = GnvcModel.from_profile(profile_name(params), seed=int(section["seed"]))
    t0 = time.perf_counter()
    vae = model.vae
    # Start from a nearly deterministic posterior (σ = exp(logvar_init / 2)): with Wan's default σ ≈ 1
    # the sampled noise swamps the untrained encoder's means and the decoder first learns the average.
    logvar_init = section.get("logvar_init")
    if logvar_init is not None:
        with torch.no_grad():
            vae.vae.quant_conv.bias[vae.vae.config.z_dim :].fill_(float(logvar_init))
    trainer = make_trainer("vae", params, section, {"vae": vae}, list(vae.parameters()))
    vae.to(trainer.device)
    manifest, frames, crop = clip_settings(params, section)
    clips = clip_stream(trainer, params, section)
    kl_weight = float(section.get("kl_weight", 1e-4))
    lpips_weight = float(section.get("lpips_weight", 0.1))
    recon = str(section.get("recon_loss", "l1"))
    lpips_net = None
    if lpips_weight > 0:
        from gnvc.metrics.lpips_metric import lpips_model

        lpips_net = lpips_model(str(section.get("lpips_net", "alex")), str(trainer.device))

    # Image phase first: single frames are the causal VAE's intra path (frame 1 is coded alone) and
    # train its spatial weights ~3x faster per second than clips; the clip phase then trains the
    # temporal layers. Both streams are resumable.
    image_steps = int(section.get("image_steps", 0))
    images = None
    if image_steps > 0:
        images = trainer.stream(
            "images",
            clip_stream_factory(manifest, int(section.get("image_batch_size", 16)), int(section["seed"]) + 2, 1, crop),
        )

    # The clip phase starts from the image VAE inflated in time (VideoVAE.inflate_temporal), once, at
    # step ``image_steps`` (0: the fresh model), with fresh Adam moments and its own LR warm-up; a run
    # resumed past that step already has both.
    inflate = bool(section.get("inflate_temporal", True))
    if image_steps > 0:
        trainer.new_phase(image_steps, int(section.get("clip_warmup_steps", section.get("warmup_steps", 0))))
    switched = False
    augment = ClipAugment.from_section(section)

    def step(tr: Trainer) -> dict[str, torch.Tensor]:
        nonlocal switched
        if tr.step == image_steps and not switched:
            if inflate:
                vae.inflate_temporal()
            switched = True
        x = augment(tr, next(images if images is not None and tr.step < image_steps else clips).to(tr.device))
        eps = tr.randn(vae_latent_shape(x, vae.vae.config.z_dim))
        return vae_losses(
            vae, x, eps, kl_weight=kl_weight, lpips_weight=lpips_weight, lpips_net=lpips_net, recon_loss=recon
        )

    last = trainer.fit(step)
    # Normalisation statistics of the trained VAE's latents (the codec and DiT see unit scale).
    stats_stream = clip_stream_factory(
        manifest, int(section.get("batch_size", 2)), int(section["seed"]) + 1, frames, crop
    )()
    batches = [next(stats_stream).to(trainer.device) for _ in range(int(section.get("stats_batches", 8)))]
    vae.eval()
    mean, std = latent_statistics(vae, batches)
    vae.set_latent_stats(mean.cpu(), std.cpu())
    model.profile["vae"]["latents_mean"] = [float(v) for v in mean]
    model.profile["vae"]["latents_std"] = [float(v) for v in std]
    return stage_result(trainer, last, model, output, t0)
