"""Stage ``prior``: pretrain the DiT as an unconditional flow-matching video prior (tiny/small),
or import the user's Wan2.1 T2V DiT (and optionally its empty-prompt embedding).

Reads the ``vae`` stage's model directory, trains ``refiner.transformer`` on the VAE's normalised
latents with the null text condition, and writes ``build/<profile>/prior``. The adapter stays
zero and unused here (no context): the prior is the plain DiT.

Loss: ‖v_θ(x_t, t) − (x1 − x0)‖² with x_t = t·x1 + (1 − t)·x0, x0 ~ N(0, I) and t drawn
uniformly from [t_min, 1]. The codec only ever asks the prior for t ≥ tN (0.7 by default), so a
CPU-sized budget is spent where refinement uses it (``t_min`` < tN keeps some margin); set
``t_min: 0`` for a prior over the whole path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from gnvc.errors import ConfigError
from gnvc.refiner.model import load_transformer
from gnvc.training.common import (
    DEFAULT_LATENTS_MANIFEST,
    dit_shards,
    finish_model,
    import_required,
    latent_stream_factory,
    load_previous,
    make_trainer,
    profile_name,
    random_crop,
    stage_path,
    stage_result,
    stage_section,
)
from gnvc.training.losses import flow_matching_loss
from gnvc.training.runner import Trainer


def import_null_text(path: Path, length: int, dim: int) -> torch.Tensor:
    """A (length, dim) text embedding from safetensors (key ``null_text`` or the only tensor)."""
    if not path.is_file():
        raise ConfigError(f"prior.null_text_path={path}: file not found")
    tensors = load_file(str(path))
    t = tensors.get("null_text", next(iter(tensors.values())) if len(tensors) == 1 else None)
    if t is None:
        raise ConfigError(f"{path}: expected a tensor named 'null_text'")
    t = t.float().reshape(-1, t.shape[-1])
    if t.shape[1] != dim:
        raise ConfigError(f"{path}: embedding width {t.shape[1]} does not match the DiT's text_dim {dim}")
    if t.shape[0] < length:  # Wan pads the umT5 sequence with zeros to 512 tokens
        t = torch.cat([t, t.new_zeros(length - t.shape[0], dim)])
    return t[:length]


def run(params: dict[str, Any]) -> dict[str, Any]:
    section = stage_section(params, "prior")
    source = stage_path(params, section, "input", "build/{profile}/vae")
    output = stage_path(params, section, "output", "build/{profile}/prior")
    model = load_previous(source, "prior")
    start = model.weights_hash.hex()  # the VAE (and the fresh DiT) this run starts from
    refiner = model.refiner
    if refiner is None:
        raise ConfigError(f"profile {model.name!r} has no refiner section; nothing to pretrain")

    if import_required(params, section):
        src = section.get("import_from")
        if not src:
            raise ConfigError(
                f"profile {profile_name(params)!r} imports its DiT: set prior.import_from in params.yaml "
                "to a local "
                "directory with the Wan2.1 T2V transformer (diffusers layout); nothing is downloaded"
            )
        path = Path(str(src))
        if (path / "transformer" / "config.json").is_file():
            path = path / "transformer"
        # Release the placeholder DiT first: at Wan2.1 size both would need 2 x 5.7 GB at once.
        refiner.transformer.to("meta")
        transformer = load_transformer(path)
        adapter_cfg = model.profile["refiner"].get("adapter")
        refiner.transformer = transformer
        # The fresh adapter is drawn from the stage's seed, not from whatever the global RNG holds:
        # the same import gives the same weights hash (it is written into every bitstream).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(section["seed"]))
            refiner.with_adapter(adapter_cfg)
        if section.get("null_text_path"):
            length, dim = refiner.null_text.shape
            refiner.null_text = import_null_text(
                Path(str(section["null_text_path"])), length, transformer.config.text_dim
            )
        model.profile["refiner"]["transformer"] = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
        return {"imported_from": str(src), "weights_hash": finish_model(model, output)}

    t0 = time.perf_counter()
    dit = refiner.transformer
    dit.requires_grad_(True)
    if refiner.adapter is not None:
        refiner.adapter.requires_grad_(False)
    trainer = make_trainer(
        "prior", params, section, {"transformer": dit}, list(dit.parameters()), dit_shards(section, model, full=True),
        start_from=start,
    )  # fmt: skip
    refiner.to(trainer.device)
    manifest = stage_path(params, section, "latents_manifest", DEFAULT_LATENTS_MANIFEST)
    latents = trainer.stream(
        "latents",
        latent_stream_factory(manifest, int(section.get("batch_size", 8)), int(section["seed"]), section.get("frames")),
    )
    crop = section.get("crop")
    t_min = float(section.get("t_min", 0.0))
    if not 0.0 <= t_min < 1.0:
        raise ConfigError(f"prior.t_min must be in [0, 1), got {t_min}")

    def step(tr: Trainer) -> dict[str, torch.Tensor]:
        x1 = random_crop(next(latents), crop, tr.generator).to(tr.device)
        x0 = tr.randn(x1.shape)
        t = t_min + (1.0 - t_min) * tr.rand((x1.shape[0],))
        loss = flow_matching_loss(refiner, x1, x0, t)
        return {"loss": loss, "fm": loss.detach()}

    last = trainer.fit(step)
    return stage_result(trainer, last, model, output, t0)
