"""Stage ``stage2`` (pixel fine-tuning): end-to-end through the refinement steps and the VAE decoder.

Reads ``build/<profile>/stage1``, writes the shipped model directory ``models/<profile>``. For a
batch of clips V (x1 = E(V), the frozen VAE's normalised latents) and a random quality index q
per sample:

    L = R(ŷ) + λ_q·(‖V − V~‖² + λ_lpips·LPIPS(V, V~) + ‖x_c − x1‖² + ‖x~1 − x1‖²),

V~ = D(x~1) decoded from the refined latents. Gradients flow through the L Euler steps (each
velocity evaluation checkpointed) and the VAE decoder (checkpointed; its weights stay frozen)
into the codec and the adapter (and the DiT if ``dit_tuning`` says so). LPIPS is the real
LPIPS-AlexNet/VGG of ``gnvc.metrics`` with the converted offline backbone.

``trainable`` (default ``[codec, adapter]``) chooses what learns; ``[vae_decoder]`` alone trains
only the VAE decoder on what the frozen codec and refiner deliver (:func:`decoder_losses`:
``refine_prob`` of the samples refined, the rest decoded from the codec's latents), which cannot
change a stream or destabilise the P-chain. ``augment`` (gnvc.training.augment) varies the clips.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from gnvc.errors import ConfigError
from gnvc.metrics.lpips_metric import lpips_model
from gnvc.training.augment import ClipAugment
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
from gnvc.training.losses import coded_latents, decoder_losses, stage2_losses, vae_latent_shape
from gnvc.training.runner import Trainer


def run(params: dict[str, Any]) -> dict[str, Any]:
    section = stage_section(params, "stage2")
    source = stage_path(params, section, "input", "build/{profile}/stage1")
    output = stage_path(params, section, "output", "models/{profile}")
    t0 = time.perf_counter()
    model = load_previous(source, "stage2")
    start = model.weights_hash.hex()  # before LoRA (if any) changes the module tree
    parts = frozenset(section.get("trainable", ["codec", "adapter"]))
    parameters = codec_refiner_parameters(model, section, parts)
    codec, refiner, vae = model.codec, model.refiner, model.vae
    assert refiner is not None
    decoder_only = parts == {"vae_decoder"}
    if decoder_only and refiner.tuning != "frozen":
        raise ConfigError("stage2: trainable [vae_decoder] trains the decoder alone; set dit_tuning: frozen")
    modules: dict[str, torch.nn.Module] = {} if decoder_only else {"codec": codec, "refiner": refiner}
    if "vae_decoder" in parts:
        modules["vae"] = vae
    shard = dit_shards(section, model, full=refiner.tuning == "full")
    trainer = make_trainer("stage2", params, section, modules, parameters, shard, start_from=start)
    model.to(trainer.device)
    vae.eval()
    if decoder_only:
        codec.eval()  # hard rounding, as decoding does
        refiner.eval()
    lambdas = quality_lambdas(section, codec.num_qualities).to(trainer.device)
    t_n = float(section.get("t_n", model.coding.get("t_n", 0.7)))
    n_steps = int(section.get("refine_steps", model.coding.get("steps", 5)))
    lpips_weight = float(section.get("lpips_weight", 1.0))
    temporal_weight = float(section.get("temporal_weight", 0.0))
    if temporal_weight and not decoder_only:
        raise ConfigError("stage2: temporal_weight applies to the decoder fine-tune (trainable: [vae_decoder])")
    lpips_net = lpips_model(str(section.get("lpips_net", "alex")), str(trainer.device))
    refiner.checkpoint_steps = bool(section.get("checkpoint_steps", True))
    checkpoint_decoder = bool(section.get("checkpoint_decoder", True))
    refine_prob = float(section.get("refine_prob", 1.0))
    clips = clip_stream(trainer, params, section)
    augment = ClipAugment.from_section(section)

    def step(tr: Trainer) -> dict[str, torch.Tensor]:
        video = augment(tr, next(clips).to(tr.device))
        q = tr.randint(codec.num_qualities, (video.shape[0],))
        x0 = tr.randn(vae_latent_shape(video, codec.config["latent_channels"]))
        if decoder_only:
            refine = tr.rand((video.shape[0],)) < refine_prob
            coded = coded_latents(codec, refiner, vae, video, q, x0, refine, t_n=t_n, steps=n_steps)
            return decoder_losses(
                vae, video, coded, lpips_net, lpips_weight=lpips_weight, temporal_weight=temporal_weight,
                checkpoint_decoder=checkpoint_decoder,
            )  # fmt: skip
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
    return stage_result(trainer, last, model, output, t0, fit_quantiles="codec" in parts)
