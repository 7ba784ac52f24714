"""What the training stages share: reading their params section, paths, data streams, crops, saving.

Every stage's ``run(params)`` gets the whole ``params.yaml`` (top-level ``profile`` and ``seed``,
and its own section). Path values may contain ``{profile}``, filled with the profile name, so one
``params.yaml`` serves every profile.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from gnvc.errors import ConfigError, WeightsError
from gnvc.models.model_dir import GnvcModel
from gnvc.training.distributed import current_group
from gnvc.training.runner import TrainConfig, Trainer, fingerprint

DEFAULT_CLIPS_MANIFEST = "data/clips/manifest.json"
DEFAULT_LATENTS_MANIFEST = "data/latents/manifest.json"
VOLATILE_KEYS = frozenset({
    "steps", "checkpoint_every", "keep_checkpoints", "log_every", "progress", "device", "export_dir",
    "log_dir", "run_dir", "frames", "batch_size", "image_batch_size", "image_steps", "crop", "stats_batches",
    "fsdp", "augment", "export_moments",
})  # fmt: skip


def stage_section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The stage's section, with ``seed``/``profile`` inherited from the top level when absent."""
    if name not in params or not isinstance(params[name], dict):
        raise ConfigError(f"params.yaml has no '{name}:' section")
    section = copy.deepcopy(params[name])
    section.setdefault("seed", int(params.get("seed", 0)))
    return section


def profile_name(params: dict[str, Any]) -> str:
    return str(params.get("profile", "tiny"))


def stage_path(params: dict[str, Any], section: dict[str, Any], key: str, default: str) -> Path:
    """A path from the section (or the default), with ``{profile}`` filled in."""
    return Path(str(section.get(key) or default).format(profile=profile_name(params)))


def import_required(params: dict[str, Any], section: dict[str, Any]) -> bool:
    """Whether this profile imports user weights instead of training (``import_profiles`` in params)."""
    return profile_name(params) in list(section.get("import_profiles") or [])


def load_previous(path: Path, stage: str) -> GnvcModel:
    """The model directory the previous stage wrote, with a message that says which stage to run."""
    try:
        return GnvcModel.from_pretrained(path)
    except WeightsError as e:
        raise WeightsError(f"stage {stage!r} needs the previous stage's model directory: {e}") from None


def stage_fingerprint(params: dict[str, Any], section: dict[str, Any], start_from: str | None = None) -> str:
    """The config fingerprint a stage's checkpoints resume under (see :class:`Trainer`).

    Keys that change the schedule or the data shape but not the model or the optimiser are left
    out: extending ``steps``, logging less often, moving to longer clips (a curriculum) or turning
    on data augmentation from some step on (``augment.from_step``) resumes the run instead of
    starting it over, so hours of training add up. Architecture, losses and the learning rate stay
    fingerprinted.

    ``start_from``: the weights hash of the model the stage starts from (the previous stage's
    output). The section names that model only by its path, so without it a prior trained on one
    VAE's latents would resume, finished, on top of a retrained VAE and ship as if it matched it.
    """
    kept = {k: v for k, v in section.items() if k not in VOLATILE_KEYS}
    ident: dict[str, Any] = {"profile": profile_name(params), "section": kept}
    if start_from is not None:
        ident["start_from"] = start_from
    return fingerprint(ident)


def make_trainer(
    name: str,
    params: dict[str, Any],
    section: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    parameters: list[torch.nn.Parameter] | list[dict[str, Any]],
    shard: list[torch.nn.Module] | None = None,
    start_from: str | None = None,
) -> Trainer:
    """A :class:`Trainer` whose checkpoints resume only into the same profile and section, and
    only on top of the same ``start_from`` model (the weights hash of the previous stage's output,
    as loaded; see :func:`stage_fingerprint`).

    ``shard``: modules the Trainer splits over its workers with FSDP when there are several
    (:func:`dit_shards`); a single process ignores it.
    """
    cfg = TrainConfig.from_params(section)
    run_dir = stage_path(params, section, "run_dir", f"build/{{profile}}/runs/{name}")
    log_dir = stage_path(params, section, "log_dir", f"reports/train/{name}")
    fp = stage_fingerprint(params, section, start_from)
    export = section.get("export_dir")
    export_dir = stage_path(params, section, "export_dir", "") if export else None
    return Trainer(
        name, modules, parameters, cfg, run_dir=run_dir, log_dir=log_dir, config_fingerprint=fp, export_dir=export_dir,
        shard=shard,
    )  # fmt: skip


def dit_shards(section: dict[str, Any], model: GnvcModel, *, full: bool) -> list[torch.nn.Module]:
    """The DiT, when it trains in ``full`` and the section's ``fsdp`` (default true) lets FSDP shard it
    over the workers (gnvc.training.fsdp); nothing otherwise (frozen or LoRA: plain data parallelism).
    Not fingerprinted: the checkpoints are the same files either way."""
    if not full or not bool(section.get("fsdp", True)) or model.refiner is None:
        return []
    return [model.refiner.transformer]


def random_crop(x: torch.Tensor, size: tuple[int, int] | list[int] | None, generator: torch.Generator) -> torch.Tensor:
    """A random spatial crop of (B, C, T, H, W) to ``size`` (h, w), the same window for the batch.

    Drawn from the runner's generator so a resumed run crops identically.
    """
    if not size:
        return x
    ch, cw = int(size[0]), int(size[1])
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        raise ConfigError(f"crop {ch}x{cw} is larger than the data ({h}x{w})")
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return x[..., top : top + ch, left : left + cw]


def clip_stream_factory(
    manifest: Path, batch_size: int, seed: int, frames: int | None, crop: list[int] | None, split: str = "train"
) -> Any:
    """A factory of pixel clip batches (B, 3, T, H, W) in [-1, 1]: random ``frames``-long windows
    and random ``crop`` (h, w) windows, drawn by the shard reader from ``seed`` (so a restarted
    factory yields the same batches, which is what resume relies on)."""
    from gnvc.data.shards import iter_clip_batches

    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no clip manifest; run the prepare stage first (`dvc repro prepare`)")

    def factory() -> Iterator[torch.Tensor]:
        return iter_clip_batches(
            manifest, batch_size, seed, shuffle=True, repeat=True, crop=list(crop) if crop else None,
            frames=frames, split=split,
        )  # fmt: skip

    return factory


def clip_settings(params: dict[str, Any], section: dict[str, Any]) -> tuple[Path, int, list[int] | None]:
    """The clip manifest, clip length and crop of a pixel-space training (the vae and stage2 stages)."""
    manifest = stage_path(params, section, "clips_manifest", DEFAULT_CLIPS_MANIFEST)
    return manifest, int(section.get("frames", 9)), section.get("crop", [64, 64])


def clip_stream(trainer: Trainer, params: dict[str, Any], section: dict[str, Any]) -> Any:
    """The trainer's resumable ``clips`` stream of ``batch_size`` training clips (:func:`clip_settings`)."""
    manifest, frames, crop = clip_settings(params, section)
    factory = clip_stream_factory(manifest, int(section.get("batch_size", 2)), int(section["seed"]), frames, crop)
    return trainer.stream("clips", factory)


def latent_stream_factory(manifest: Path, batch_size: int, seed: int, frames: int | None) -> Any:
    """A factory of latent batches (B, 16, F, h, w), optionally cut to ``frames`` latent frames."""
    from gnvc.data.shards import iter_latent_batches

    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no latent manifest; run the latents stage first (`dvc repro latents`)")

    def factory() -> Iterator[torch.Tensor]:
        for batch in iter_latent_batches(manifest, batch_size, seed, shuffle=True, repeat=True):
            yield batch[:, :, :frames] if frames else batch

    return factory


def finish_model(model: GnvcModel, output: Path, *, fit_quantiles: bool = False) -> str:
    """Fold LoRA in, rebuild the entropy tables, and write a complete model directory.

    ``fit_quantiles``: converge the codec's quantiles first (:meth:`ContextualLatentCodec.fit_quantiles`),
    for the stages that trained the codec (Stage I and II).
    """
    if model.refiner is not None:
        model.refiner.merge_lora()
        model.refiner.checkpoint_steps = False
    if fit_quantiles:
        model.codec.fit_quantiles()
    model.codec.update(force=True)
    model.invalidate_hash()
    model.cpu().eval()
    group = current_group()
    if group is None or group.is_main:  # in a worker group rank 0 alone writes the model directory
        model.save_pretrained(output)
    return model.weights_hash.hex()


def stage_result(
    trainer: Trainer, last: dict[str, float], model: GnvcModel, output: Path, t0: float, *, fit_quantiles: bool = False
) -> dict[str, Any]:
    """Save the trained model (:func:`finish_model`) and return the stage's metrics."""
    if trainer.sharded and model.refiner is not None:  # FSDP: the DiT back in one piece (every rank gathers)
        model.refiner.transformer = trainer.unsharded(model.refiner.transformer)
        if model.refiner.adapter is not None:
            model.refiner.adapter.attach(model.refiner.transformer)
    weights_hash = finish_model(model, output, fit_quantiles=fit_quantiles)
    return {
        **{f"train_{k}": v for k, v in last.items()},
        "steps": trainer.step,
        "resumed_from": trainer.resumed_from or 0,  # the checkpoint's step this run continued from
        "fsdp": trainer.sharded,  # the DiT was sharded over the workers (gnvc.training.fsdp)
        "seconds": round(time.perf_counter() - t0, 1),
        "weights_hash": weights_hash,
    }


STAGE2_PARTS = ("codec", "adapter", "vae_decoder")


def codec_refiner_parameters(
    model: GnvcModel, section: dict[str, Any], parts: frozenset[str] = frozenset({"codec", "adapter"})
) -> list[dict[str, Any]]:
    """The parameter groups Stage I/II train: the codec, the adapter, and the DiT as ``dit_tuning`` says.

    The VAE stays frozen (DESIGN §1) unless ``parts`` names ``vae_decoder`` (Stage II's
    ``trainable``: the decoder, after ``post_quant_conv``, learns to decode what the coding loop
    delivers; the encoder never trains, so the latent space the codec and the prior were trained
    on stays the same). ``dit_tuning``: ``frozen`` (default: the DiT is the prior, the adapter
    learns Δv_fine), ``lora`` (peft LoRA on the attention projections, merged into plain weights
    when saved) or ``full``. The factorized prior's quantiles (trained only by the auxiliary loss)
    get their own group at ``aux_lr`` without weight decay, as CompressAI's separate auxiliary
    optimizer would: they must travel several units from their initial range within a CPU-sized
    budget, and Adam moves a parameter about ``lr`` per step.
    """
    unknown = set(parts) - set(STAGE2_PARTS)
    if unknown or not parts:
        raise ConfigError(f"'trainable' must name one or more of {list(STAGE2_PARTS)}, got {sorted(parts)}")
    if model.refiner is None:
        raise ConfigError(f"profile {model.name!r} has no refiner; Stage I/II train the codec with the refiner")
    if model.refiner.adapter is None:
        raise ConfigError("the refiner has no adapter (profile refiner.adapter); nothing conditions it on the codec")
    model.vae.requires_grad_(False)
    model.codec.requires_grad_("codec" in parts)
    model.refiner.set_tuning(str(section.get("dit_tuning", "frozen")), section.get("lora"))
    model.refiner.adapter.requires_grad_("adapter" in parts)
    refiner_params = [p for p in model.refiner.parameters() if p.requires_grad]
    decoder_params: list[torch.nn.Parameter] = []
    if "vae_decoder" in parts:
        for m in (model.vae.vae.post_quant_conv, model.vae.vae.decoder):
            m.requires_grad_(True)
            decoder_params += list(m.parameters())
    named = [(n, p) for n, p in model.codec.named_parameters() if p.requires_grad]
    quantiles = [p for n, p in named if n.endswith("quantiles")]
    main = [p for n, p in named if not n.endswith("quantiles")] + refiner_params + decoder_params
    groups: list[dict[str, Any]] = [{"params": main}]
    if quantiles:
        groups.append({"params": quantiles, "lr": float(section.get("aux_lr", 1e-2)), "weight_decay": 0.0})
    return groups


def quality_lambdas(section: dict[str, Any], num_qualities: int) -> torch.Tensor:
    """λ per quality index (distortion weight against the rate in bits per pixel), increasing."""
    lambdas = [float(v) for v in section.get("lambdas", [])]
    if len(lambdas) != num_qualities:
        raise ConfigError(f"'lambdas' needs one value per quality index ({num_qualities}), got {len(lambdas)}")
    if any(b <= a for a, b in zip(lambdas, lambdas[1:], strict=False)):
        raise ConfigError("'lambdas' must increase with the quality index (higher index, higher rate)")
    return torch.tensor(lambdas)
