"""A Wan2.1-T2V-1.3B directory at its real size, without its weights: published configs, random tensors.

``python -m gnvc.models.wan21 DIR [--seed S]`` writes what ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``
holds for the two components gnvc imports (``vae.import_from`` / ``prior.import_from``), with the
exact published configurations and seeded random weights::

    DIR/model_index.json                    WanPipeline index (text encoder/tokenizer: null, see below)
    DIR/scheduler/scheduler_config.json     UniPCMultistepScheduler, flow_shift 3.0
    DIR/vae/config.json                     AutoencoderKLWan, 126,892,531 parameters (fp32, 508 MB)
    DIR/vae/diffusion_pytorch_model.safetensors
    DIR/transformer/config.json             WanTransformer3DModel, 1,418,996,800 parameters (fp32, 5.68 GB)
    DIR/transformer/diffusion_pytorch_model-0000{1,2}-of-00002.safetensors  (+ .index.json)
    DIR/RANDOM_WEIGHTS.json                 what this is: seed, counts, the sources of the configs

Why: the real weights are not on this machine, but what depends on the model's *size* — import,
loading, memory, the time of one training step, the encode/decode path — can be tested and
measured at the real size with random weights; a test can build a down-scaled directory through
the same code (``build(..., transformer_config=..., vae_config=...)``).

Why so careful with memory: the DiT is 5.7 GB in float32. The model is built on the meta device and
materialised one module at a time — initialised, written into its safetensors shard, released — so
building takes a few hundred MB whatever the size. Each module's values come from its own
generator, seeded from (seed, module name): the files depend only on the seed, not on the order of
work, and two builds with one seed are byte-identical.

Sources of the configurations (copied verbatim, checked byte for byte where the size is published):

- transformer/config.json: huggingface.co/Wan-AI/Wan2.1-T2V-1.3B-Diffusers (465 bytes, 2 shards of
  5 GB + 677 MB, index 73.3 kB: this module's shard plan gives 4,998,694,912 + 677,292,288 bytes
  and a 73,296-byte index); the values equal the Wan2.1 repo's ``wan/configs/wan_t2v_1_3B.py`` (dim 1536,
  ffn 8960, 12 heads, 30 layers, freq_dim 256, qk_norm, cross_attn_norm, eps 1e-6). The JSON below,
  written as diffusers writes configs, is exactly 465 bytes.
- vae/config.json: huggingface.co/diffusers/Wan2.1-VAE (the same VAE every Wan2.1 model ships);
  equal to ``AutoencoderKLWan()``'s defaults and to gnvc/profiles/wan2.1.yaml.
- scheduler: diffusers' Wan docs ("By default, Wan uses UniPCMultistepScheduler(prediction_type=
  'flow_prediction', use_flow_sigmas=True, flow_shift=3.0)"); gnvc never reads it (it integrates
  the flow itself, gnvc.refiner.flow), it is written so the directory has the published layout.
- The umT5-XXL text encoder (5.7B parameters) and its tokenizer are not written: gnvc conditions the
  DiT on a fixed null-text embedding (prior.null_text_path), never on a prompt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gnvc.errors import ConfigError
from gnvc.tensor_files import SafetensorsWriter

DIFFUSERS_VERSION = "0.33.0.dev0"  # the version the published directory was written with

TRANSFORMER_CONFIG: dict[str, Any] = {
    "_class_name": "WanTransformer3DModel",
    "_diffusers_version": DIFFUSERS_VERSION,
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 8960,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 16,
    "num_attention_heads": 12,
    "num_layers": 30,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}

VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKLWan",
    "_diffusers_version": DIFFUSERS_VERSION,
    "attn_scales": [],
    "base_dim": 96,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ],
    "latents_std": [
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916,
    ],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "z_dim": 16,
}  # fmt: skip

SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "UniPCMultistepScheduler",
    "_diffusers_version": DIFFUSERS_VERSION,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}

MODEL_INDEX: dict[str, Any] = {
    "_class_name": "WanPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "text_encoder": [None, None],  # published: transformers UMT5EncoderModel (not written, see above)
    "tokenizer": [None, None],  # published: transformers T5TokenizerFast
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
}

TRANSFORMER_PARAMETERS = 1_418_996_800
VAE_PARAMETERS = 126_892_531
SHARD_SIZE = 5_000_000_000  # diffusers' "5GB" at the time: the published DiT is 2 shards, 5 GB + 677 MB
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
MARKER_NAME = "RANDOM_WEIGHTS.json"


def config_json(config: dict[str, Any]) -> str:
    """A config as diffusers writes it (``to_json_string``: indent 2, sorted keys, newline)."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a diffusers config (the ``_``-prefixed keys dropped, lists of the
    transformer's patch size as the tuple the class expects)."""
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    if "patch_size" in kwargs and isinstance(kwargs["patch_size"], list):
        kwargs["patch_size"] = tuple(kwargs["patch_size"])
    return kwargs


def meta_transformer(config: dict[str, Any] | None = None) -> nn.Module:
    """The DiT of ``config`` (default: the published one) on the meta device: shapes, no memory."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return WanTransformer3DModel(**model_kwargs(config or TRANSFORMER_CONFIG))


def meta_vae(config: dict[str, Any] | None = None) -> nn.Module:
    """The VAE of ``config`` (default: the published one) on the meta device."""
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        return AutoencoderKLWan(**model_kwargs(config or VAE_CONFIG))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------- init
def module_seed(seed: int, name: str) -> int:
    """The seed of one module's generator: a function of (seed, qualified name) only."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _init_own_parameters(module: nn.Module) -> None:
    """Initialise ``module``'s own (non-recursive) parameters as its class does, from the global RNG.

    torch layers (Linear, Conv, LayerNorm, RMSNorm) have ``reset_parameters``; the two Wan-specific
    parameters are initialised as diffusers' constructors do (``WanRMS_norm.gamma`` = 1, the
    ``scale_shift_table`` ~ N(0, 1)/√dim). Any other parameter is refused, so a diffusers release
    that adds one is noticed instead of silently written as garbage.
    """
    own = dict(module.named_parameters(recurse=False))
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for name, p in own.items():
        with torch.no_grad():
            if name == "gamma":
                p.fill_(1.0)
            elif name == "scale_shift_table":
                p.normal_().div_(math.sqrt(p.shape[-1]))
            else:
                raise ConfigError(f"no random initialisation known for {type(module).__name__}.{name}")


def materialised(model: nn.Module, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(state-dict key, CPU tensor)`` of a meta-device model in state-dict order, one module
    materialised at a time and released after its tensors were consumed."""
    for mod_name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(module_seed(seed, mod_name))
            module.to_empty(device="cpu", recurse=False)
            _init_own_parameters(module)
        prefix = f"{mod_name}." if mod_name else ""
        for name, p in module.named_parameters(recurse=False):
            yield prefix + name, p.detach()
        module.to_empty(device="meta", recurse=False)


# ---------------------------------------------------------------------------------------- files
def shard_plan(specs: list[tuple[str, torch.dtype, tuple[int, ...]]], max_bytes: int) -> list[list[str]]:
    """Keys per shard, as huggingface_hub's ``split_torch_state_dict_into_shards`` (what diffusers'
    ``save_pretrained`` calls) cuts them: in state-dict order, a new shard when the next tensor
    would push the current one over ``max_bytes``."""
    shards: list[list[str]] = [[]]
    size = 0
    for key, dtype, shape in specs:
        n = math.prod(shape) * dtype.itemsize
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += n
    return shards


def write_component(
    model: nn.Module, config: dict[str, Any], out: Path, *, seed: int, max_shard_bytes: int | None
) -> dict[str, Any]:
    """``config.json`` plus the weights of a meta-device ``model``, sharded as diffusers shards."""
    out.mkdir(parents=True)
    (out / "config.json").write_text(config_json(config))
    specs = [(k, v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()]
    persistent = {k for k, _, _ in specs}
    params = {k for k, _ in model.named_parameters()}
    if persistent != params:  # buffers in the state dict would need values too
        raise ConfigError(f"{type(model).__name__} has persistent buffers: {sorted(persistent - params)[:3]}")
    plan = shard_plan(specs, max_shard_bytes) if max_shard_bytes else [[k for k, _, _ in specs]]
    by_key = {k: (k, d, s) for k, d, s in specs}
    if len(plan) == 1:
        names = [WEIGHTS_NAME]
    else:
        stem = WEIGHTS_NAME[: -len(".safetensors")]
        names = [f"{stem}-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
    writers = [SafetensorsWriter(out / name, [by_key[k] for k in keys]) for name, keys in zip(names, plan, strict=True)]
    shard_of = {k: i for i, keys in enumerate(plan) for k in keys}
    try:
        for key, tensor in materialised(model, seed):
            writers[shard_of[key]].write(key, tensor)
    finally:
        for w in writers:
            w.close()
    total = sum(w.size for w in writers)
    if len(plan) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": {k: names[shard_of[k]] for k in by_key}}
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return {"parameters": count_parameters(model), "bytes": total, "files": names}


def build(
    out: str | Path,
    *,
    seed: int = 0,
    transformer_config: dict[str, Any] | None = None,
    vae_config: dict[str, Any] | None = None,
    max_shard_bytes: int | None = SHARD_SIZE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the directory (atomically: a temporary sibling renamed at the end); returns a summary.

    Without configs it is the published Wan2.1-T2V-1.3B layout, and the parameter counts are
    checked against the published model's; a test passes down-scaled configs through the same code.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    tcfg, vcfg = transformer_config or TRANSFORMER_CONFIG, vae_config or VAE_CONFIG
    dit, vae = meta_transformer(tcfg), meta_vae(vcfg)
    if transformer_config is None and count_parameters(dit) != TRANSFORMER_PARAMETERS:
        raise ConfigError(f"this diffusers builds a {count_parameters(dit):,}-parameter DiT, not Wan2.1-T2V-1.3B's")
    if vae_config is None and count_parameters(vae) != VAE_PARAMETERS:
        raise ConfigError(f"this diffusers builds a {count_parameters(vae):,}-parameter VAE, not Wan2.1's")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    t0 = time.perf_counter()
    try:
        (tmp / "model_index.json").write_text(config_json(MODEL_INDEX))
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(config_json(SCHEDULER_CONFIG))
        summary = {
            "seed": int(seed),
            "published_configs": transformer_config is None and vae_config is None,
            "transformer": write_component(dit, tcfg, tmp / "transformer", seed=seed, max_shard_bytes=max_shard_bytes),
            "vae": write_component(vae, vcfg, tmp / "vae", seed=seed + 1, max_shard_bytes=None),
            "note": "random weights with Wan2.1-T2V-1.3B's published configs (gnvc.models.wan21): not a trained model",
        }
        (tmp / MARKER_NAME).write_text(json.dumps(summary, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the directory is an ordinary output
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gnvc.models.wan21",
        description="Write a Wan2.1-T2V-1.3B diffusers directory (published configs, seeded random weights).",
    )
    parser.add_argument("dir", type=Path, help="output directory (diffusers layout: vae/, transformer/, ...)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (same seed: byte-identical files)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    args = parser.parse_args(argv)
    try:
        summary = build(args.dir, seed=args.seed, overwrite=args.overwrite)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
