"""Stage ``stage1`` (latent alignment): train the latent codec and the adapter in latent space.

Reads ``build/<profile>/prior``, writes ``build/<profile>/stage1``. For a batch of latents x1,
each sample gets a random quality index q (its own λ_q), and

    L = R(ŷ) + λ_q·(‖x~1 − x1‖² + w_c·‖x_c − x1‖²) + w_cfm·L_CFM,

R in bits per pixel from the codec's likelihoods, x~1 the refined latents after the L Euler steps
from x_{tN} = tN·x_c + (1 − tN)·x0 (back-propagated through all steps into the codec and the
adapter), and L_CFM the conditional flow matching loss on the straight path from x_{tN} to x1
with target v_τ = (x1 − x0) − tN/(1 − tN)·(x_c − x1) at τ ~ U[tN, 1). DESIGN §1's Stage I is
w_c = 0, w_cfm = 1; ``codec_mse_weight`` (w_c) lets the codec learn directly from its own error
as well, which a from-scratch codec needs on a CPU budget (documented in docs/training.md).

``codec_warmup_steps`` (N, default 0): the first N steps train the codec alone on
R(ŷ) + λ_q·‖x_c − x1‖² (no refinement, ~13× cheaper per step on a CPU); at step N the full
objective starts with fresh Adam moments and its own LR warm-up (``joint_warmup_steps``), as the
VAE's image → clip phases do. One cosine schedule spans both phases.
tN and L are the profile's ``coding`` values, the ones the encoder writes into headers.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from gnvc.training.common import (
    DEFAULT_LATENTS_MANIFEST,
    codec_refiner_parameters,
    dit_shards,
    latent_stream_factory,
    load_previous,
    make_trainer,
    quality_lambdas,
    random_crop,
    stage_path,
    stage_result,
    stage_section,
)
from gnvc.training.losses import codec_losses, stage1_losses
from gnvc.training.runner import Trainer


def run(params: dict[str, Any]) -> dict[str, Any]:
    section = stage_section(params, "stage1")
    source = stage_path(params, section, "input", "build/{profile}/prior")
    output = stage_path(params, section, "output", "build/{profile}/stage1")
    t0 = time.perf_counter()
    model = load_previous(source, "stage1")
    start = model.weights_hash.hex()  # before LoRA (if any) changes the module tree
    parameters = codec_refiner_parameters(model, section)
    codec, refiner = model.codec, model.refiner
    assert refiner is not None
    shard = dit_shards(section, model, full=refiner.tuning == "full")
    trainer = make_trainer(
        "stage1", params, section, {"codec": codec, "refiner": refiner}, parameters, shard, start_from=start
    )
    model.to(trainer.device)
    lambdas = quality_lambdas(section, codec.num_qualities).to(trainer.device)
    t_n = float(section.get("t_n", model.coding.get("t_n", 0.7)))
    n_steps = int(section.get("refine_steps", model.coding.get("steps", 5)))
    w_c = float(section.get("codec_mse_weight", 0.0))
    w_cfm = float(section.get("cfm_weight", 1.0))
    refiner.checkpoint_steps = bool(section.get("checkpoint_steps", False))
    manifest = stage_path(params, section, "latents_manifest", DEFAULT_LATENTS_MANIFEST)
    latents = trainer.stream(
        "latents",
        latent_stream_factory(manifest, int(section.get("batch_size", 8)), int(section["seed"]), section.get("frames")),
    )
    crop = section.get("crop")
    warmup = int(section.get("codec_warmup_steps", 0))
    if warmup > 0:
        trainer.new_phase(warmup, int(section.get("joint_warmup_steps", section.get("warmup_steps", 0))))

    def noise(shape: torch.Size) -> torch.Tensor:
        return trainer.rand(shape) - 0.5  # per sample, the same at any worker count

    def step(tr: Trainer) -> dict[str, torch.Tensor]:
        x1 = random_crop(next(latents), crop, tr.generator).to(tr.device)
        b = x1.shape[0]
        q = tr.randint(codec.num_qualities, (b,))
        if tr.step < warmup:
            return codec_losses(codec, x1, q, lambdas, noise=noise)
        x0 = tr.randn(x1.shape)
        tau = t_n + (1.0 - t_n) * tr.rand((b,))
        return stage1_losses(
            codec,
            refiner,
            x1,
            q,
            x0,
            tau,
            lambdas,
            t_n=t_n,
            steps=n_steps,
            codec_mse_weight=w_c,
            cfm_weight=w_cfm,
            noise=noise,
        )

    last = trainer.fit(step)
    return stage_result(trainer, last, model, output, t0, fit_quantiles=True)
