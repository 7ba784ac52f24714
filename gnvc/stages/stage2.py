"""Stage ``stage2`` (pixel fine-tuning): end-to-end through the refinement steps and the VAE decoder.

Reads ``build/<profile>/stage1``, writes the shipped model directory ``models/<profile>``. For a
batch of clips V (x1 = E(V), the frozen VAE's normalised latents) and a random quality index q
per sample:

    L = R(ŷ) + λ_q·(‖V − V~‖² + λ_lpips·LPIPS(V, V~) + ‖x_c − x1‖² + ‖x~1 − x1‖²),

V~ = D(x~1) decoded from the refined latents. Gradients flow through the L Euler steps (each
velocity evaluation checkpointed) and the VAE decoder (checkpointed; its weights stay frozen)
into the codec and the adapter (and the DiT if ``dit_tuning`` says so). LPIPS is the real
LPIPS-AlexNet/VGG of ``gnvc.metrics`` with the converted offline backbone.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from gnvc.metrics.lpips_metric import lpips_model
from gnvc.training.common import (
    clip_stream,
    codec_refiner_parameters,
    dit_shards,
    load_previous,
    make_trainer,
    quality_lambdas,
    stage_path,
    stage_result,
    stage_section,
)
from gnvc.training.losses import stage2_losses, vae_latent_shape
from gnvc.training.runner import Trainer


def run(params: dict[str, Any]) -> dict[str, Any]:
    section = stage_section(params, "stage2")
    source = stage_path(params, section, "input", "build/{profile}/stage1")
    output = stage_path(params, section, "output", "models/{profile}")
    t0 = time.perf_counter()
    model = load_previous(source, "stage2")
    parameters = codec_refiner_parameters(model, section)
    codec, refiner, vae = model.codec, model.refiner, model.vae
    assert refiner is not None
    shard = dit_shards(section, model, full=refiner.tuning == "full")
    trainer = make_trainer("stage2", params, section, {"codec": codec, "refiner": refiner}, parameters, shard)
    model.to(trainer.device)
    vae.eval()
    lambdas = quality_lambdas(section, codec.num_qualities).to(trainer.device)
    t_n = float(section.get("t_n", model.coding.get("t_n", 0.7)))
    n_steps = int(section.get("refine_steps", model.coding.get("steps", 5)))
    lpips_weight = float(section.get("lpips_weight", 1.0))
    lpips_net = lpips_model(str(section.get("lpips_net", "alex")), str(trainer.device))
    refiner.checkpoint_steps = bool(section.get("checkpoint_steps", True))
    checkpoint_decoder = bool(section.get("checkpoint_decoder", True))
    clips = clip_stream(trainer, params, section)

    def step(tr: Trainer) -> dict[str, torch.Tensor]:
        video = next(clips).to(tr.device)
        q = tr.randint(codec.num_qualities, (video.shape[0],))
        x0 = tr.randn(vae_latent_shape(video, codec.config["latent_channels"]))
        return stage2_losses(
            codec,
            refiner,
            vae,
            video,
            q,
            x0,
            lambdas,
            lpips_net,
            t_n=t_n,
            steps=n_steps,
            lpips_weight=lpips_weight,
            checkpoint_decoder=checkpoint_decoder,
            noise=lambda shape: tr.rand(shape) - 0.5,  # per sample, the same at any worker count
        )

    last = trainer.fit(step)
    return stage_result(trainer, last, model, output, t0, fit_quantiles=True)
