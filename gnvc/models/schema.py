"""Weights are data, never code: a model directory or a training checkpoint is validated before
any tensor is allocated.

What a directory may hold: JSON configs and safetensors files (plus notes in ``.md``/``.txt``).
Anything in a pickle format (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, ...) or whose bytes
start like a pickle or a zip (torch) archive is refused by name, so no code path can unpickle it.

What is checked, in this order, each failure a :class:`WeightsError` naming the file:

1. **files**: no pickle anywhere; every file listed in the index's ``files`` has the SHA-256
   recorded there (a flipped byte names its file), none is missing, no unlisted weights appear;
2. **configs**: every field known, of the right type and in a sane range (``model_index.json`` and
   its profile, ``vae/config.json``, ``codec/config.json``, ``refiner/config.json``,
   ``refiner/transformer/config.json``), and the components consistent with each other
   (codec ``latent_channels`` = VAE ``z_dim``, adapter ``context_channels`` = codec
   ``context_channels``, ...);
3. **size**: the components are built on the meta device (no memory) and more than
   :data:`MAX_PARAMETERS` parameters are refused before anything is allocated;
4. **tensors**: each safetensors JSON header (read by hand: names, dtypes, shapes, offsets) must
   describe exactly the tensors the config's modules have, before a byte of data is read.

After loading, :class:`gnvc.models.model_dir.GnvcModel` compares the tensors' hash with the
index's ``weights_hash``. Training checkpoints (``state.safetensors`` + ``trainer.json``, full or
exported) get the same treatment in :func:`validate_checkpoint`.

The schema lives here, not in ``gnvc/codec``: the codec package imports nothing from
``gnvc/models`` (``tests/codec/test_layering.py``); the loader validates and passes the result in.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gnvc.errors import WeightsError
from gnvc.hashing import sha256_file
from gnvc.tensor_files import DTYPE_NAMES, LOGICAL_DTYPES_KEY, NARROWER, logical_dtypes

INDEX_NAME = "model_index.json"
MAX_PARAMETERS = 3_000_000_000
MAX_JSON_BYTES = 16 << 20  # a config is a few KB; a 16 MB "config" is an attack or an accident
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
MAX_TABLE_ELEMENTS = 1 << 27  # entropy tables whose shape only update() decides
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz", ".zip", ".tar")
NOTE_SUFFIXES = (".md", ".txt")
VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
TORCH_TO_SAFETENSORS = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip
FLOATS = ("F32", "F16", "BF16")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------- files
def refuse_pickles(root: Path) -> list[Path]:
    """Every file under ``root`` (sorted); a pickle-format file, by suffix or by its first bytes, is
    refused by name. Symlinks are refused too: a model directory is plain files."""
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise WeightsError(f"{p}: symbolic link in a weights directory; copy the file itself")
        if not p.is_file():
            continue
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise WeightsError(f"{p}: pickle-format file in a weights directory; only safetensors and JSON are read")
        with open(p, "rb") as f:
            head = f.read(4)
        if (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04"):
            raise WeightsError(f"{p}: pickle or zip (torch.save) data; only safetensors and JSON are read")
        files.append(p)
    return files


def read_json(path: Path) -> Any:
    """A JSON file (bounded size), or a WeightsError naming it."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise WeightsError(f"{path}: {size} bytes is far too large for a config file")
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from None


def file_digests(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every weights file under ``root`` (what the index records)."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != INDEX_NAME and p.suffix not in NOTE_SUFFIXES
    }


# ---------------------------------------------------------------------------------------------- safetensors
@dataclass(frozen=True)
class TensorInfo:
    """A tensor's safetensors dtype name and shape (``shape`` None: any, within bounds)."""

    dtype: str
    shape: tuple[int, ...] | None


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors a safetensors file declares, from its JSON header only (no tensor data is read).

    The header must be well-formed: known dtypes, non-negative shapes, and data offsets that tile
    the data section exactly (byte counts matching dtype × shape), so a loader can never be asked
    to read outside the file or to allocate more than the file holds.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise WeightsError(f"{path}: truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise WeightsError(f"{path}: safetensors header length {n} does not fit the file ({size} bytes)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        raise WeightsError(f"{path}: safetensors __metadata__ must map strings to strings")
    try:
        logical = logical_dtypes(meta)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
    out: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"{path}: tensor {name!r}: malformed header entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise WeightsError(f"{path}: tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise WeightsError(f"{path}: tensor {name!r}: invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise WeightsError(f"{path}: tensor {name!r}: invalid data_offsets {offsets!r}")
        begin, end = offsets
        if end - begin != math.prod(shape) * SAFETENSORS_DTYPES[dtype] or begin < 0:
            raise WeightsError(f"{path}: tensor {name!r}: {dtype}{shape} does not fill data_offsets {offsets}")
        spans.append((begin, end, name))
        if name in logical:  # stored narrower (gnvc.tensor_files): declare the dtype it loads as
            wide_dtype = DTYPE_NAMES[logical.pop(name)]
            wide = TORCH_TO_SAFETENSORS[wide_dtype]
            if dtype not in {TORCH_TO_SAFETENSORS[d] for d in NARROWER[wide_dtype]}:
                raise WeightsError(f"{path}: tensor {name!r}: stored as {dtype}, which is not a narrowing of {wide}")
            dtype = wide
        out[name] = TensorInfo(dtype, tuple(shape))
    if logical:
        raise WeightsError(f"{path}: {LOGICAL_DTYPES_KEY} names {sorted(logical)[0]!r}, which the file does not hold")
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise WeightsError(f"{path}: tensor {name!r}: data_offsets overlap or leave a gap")
        position = end
    if 8 + n + position != size:
        raise WeightsError(f"{path}: the header describes {position} data bytes but the file holds {size - 8 - n}")
    return out


def expected_tensors(module: torch.nn.Module) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of a (meta-device) module's state dict."""
    return {
        k: TensorInfo(TORCH_TO_SAFETENSORS.get(v.dtype, str(v.dtype)), tuple(v.shape))
        for k, v in module.state_dict().items()
    }


def check_tensors(
    path: Path, found: dict[str, TensorInfo], expected: dict[str, TensorInfo], *, float_any: bool = False
) -> None:
    """``found`` (a safetensors header) must declare exactly ``expected``.

    ``float_any``: a floating tensor may be stored as F32, F16 or BF16 (diffusers components; they
    are cast on load). An expected empty integer tensor is a table whose shape ``update()`` decides:
    an ``int_weight``/``int_bias`` must have its float sibling's shape, any other table is bounded.
    """
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise WeightsError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    if extra:
        raise WeightsError(f"{path}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all)")
    for name, want in expected.items():
        got = found[name]
        same_dtype = got.dtype == want.dtype or (float_any and want.dtype in FLOATS and got.dtype in FLOATS)
        if not same_dtype:
            raise WeightsError(f"{path}: tensor {name!r} is {got.dtype}, expected {want.dtype}")
        if want.shape is None:
            if math.prod(got.shape) > MAX_TABLE_ELEMENTS:
                raise WeightsError(f"{path}: buffer {name!r} of shape {list(got.shape)} is absurdly large")
        elif want.shape == (0,) and got.shape != (0,):
            sibling = {"int_weight": "weight", "int_bias": "bias"}.get(name.rsplit(".", 1)[-1])
            if sibling is not None:
                ref = expected.get(name.rsplit(".", 1)[0] + "." + sibling)
                if ref is None or got.shape != ref.shape:
                    raise WeightsError(f"{path}: tensor {name!r} has shape {list(got.shape)}, not its layer's")
            elif math.prod(got.shape) > MAX_TABLE_ELEMENTS:
                raise WeightsError(f"{path}: table {name!r} of shape {list(got.shape)} is absurdly large")
        elif got.shape != want.shape:
            raise WeightsError(f"{path}: tensor {name!r} has shape {list(got.shape)}, expected {list(want.shape)}")


def diffusers_weights(folder: Path) -> dict[str, TensorInfo]:
    """The tensors of a diffusers component folder: one safetensors file, or shards with an index."""
    single = folder / VAE_WEIGHTS
    index = folder / f"{VAE_WEIGHTS}.index.json"
    if single.is_file():
        return read_safetensors_header(single)
    if not index.is_file():
        raise WeightsError(f"{single}: missing (a component's weights must be safetensors)")
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsError(f"{index}: no valid weight_map")
    out: dict[str, TensorInfo] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = folder / shard
        if "/" in shard or "\\" in shard or not shard.endswith(".safetensors"):
            raise WeightsError(f"{index}: shard {shard!r} is not a safetensors file of this folder")
        tensors = read_safetensors_header(shard_path)
        for name in tensors:
            if weight_map.get(name) != shard:
                raise WeightsError(f"{shard_path}: tensor {name!r} is not mapped to this shard in {index.name}")
        out.update(tensors)
    return out


# ---------------------------------------------------------------------------------------------- field specs
Check = Callable[[Any], str | None]  # returns what is wrong, or None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(lo: int, hi: int) -> Check:
    return lambda v: None if _is_int(v) and lo <= v <= hi else f"must be an integer in {lo}..{hi}"


def number(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_num(v) and (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
        return None if ok else f"must be a number in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"

    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def string(max_len: int = 256) -> Check:
    return lambda v: None if isinstance(v, str) and len(v) <= max_len else "must be a short string"


def optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def one_of(*choices: Any) -> Check:
    return lambda v: None if v in choices else f"must be one of {list(choices)}"


def list_of(item: Check, min_len: int = 0, max_len: int = 64) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or not min_len <= len(v) <= max_len:
            return f"must be a list of {min_len}..{max_len} items"
        for i, x in enumerate(v):
            why = item(x)
            if why:
                return f"item {i} {why}"
        return None

    return check


def scalar_or_short_list(v: Any) -> str | None:
    """For a field the installed diffusers knows but this schema does not name (a newer release)."""
    items = v if isinstance(v, list) else [v]
    ok = len(items) <= 64 and all(x is None or isinstance(x, (bool, int, float, str)) for x in items)
    return None if ok else "must be a plain value"


def check_fields(
    where: str,
    cfg: Any,
    spec: dict[str, Check],
    *,
    required: Iterable[str] = (),
    extra: Iterable[str] = (),
) -> dict[str, Any]:
    """``cfg`` must be an object whose keys are in ``spec`` (or ``extra``: loosely checked), each valid."""
    if not isinstance(cfg, dict):
        raise WeightsError(f"{where}: must be a JSON object, got {type(cfg).__name__}")
    extra = set(extra)
    for key, value in cfg.items():
        if key in spec:
            why = spec[key](value)
        elif key in extra:
            why = scalar_or_short_list(value)
        else:
            raise WeightsError(f"{where}: unknown field {key!r}")
        if why:
            raise WeightsError(f"{where}: {key} {why}, got {value!r}"[:400])
    missing = [k for k in required if k not in cfg]
    if missing:
        raise WeightsError(f"{where}: required field {missing[0]!r} is missing")
    return cfg


def _signature_keys(cls: type) -> set[str]:
    return {k for k in inspect.signature(cls.__init__).parameters if k != "self"}


DIM = integer(1, 1 << 16)
VAE_SPEC: dict[str, Check] = {
    "base_dim": integer(1, 4096),
    "decoder_base_dim": optional(integer(1, 4096)),
    "z_dim": integer(1, 1024),
    "dim_mult": list_of(integer(1, 64), 1, 8),
    "num_res_blocks": integer(0, 16),
    "attn_scales": list_of(number(0, 1e6), 0, 8),
    "temperal_downsample": list_of(boolean, 0, 8),
    "dropout": number(0, 1, open_hi=True),
    "latents_mean": list_of(number(-1e6, 1e6), 1, 1024),
    "latents_std": list_of(number(0, 1e6, open_lo=True), 1, 1024),
    "is_residual": boolean,
    "in_channels": integer(1, 64),
    "out_channels": integer(1, 64),
    "patch_size": optional(integer(1, 16)),
    "scale_factor_temporal": integer(1, 64),
    "scale_factor_spatial": integer(1, 256),
}
DIFFUSERS_META: dict[str, Check] = {"_diffusers_version": string(), "_name_or_path": string(4096)}
TRANSFORMER_SPEC: dict[str, Check] = {
    "patch_size": list_of(integer(1, 16), 3, 3),
    "num_attention_heads": integer(1, 1024),
    "attention_head_dim": integer(1, 4096),
    "in_channels": integer(1, 1024),
    "out_channels": integer(1, 1024),
    "text_dim": DIM,
    "freq_dim": DIM,
    "ffn_dim": integer(1, 1 << 20),
    "num_layers": integer(1, 512),
    "cross_attn_norm": boolean,
    "qk_norm": optional(string(64)),
    "eps": number(0, 1, open_lo=True, open_hi=True),
    "image_dim": optional(DIM),
    "added_kv_proj_dim": optional(DIM),
    "rope_max_seq_len": integer(1, 1 << 24),
    "pos_embed_seq_len": optional(integer(1, 1 << 24)),
}
CODEC_SPEC: dict[str, Check] = {
    "latent_channels": integer(1, 1024),
    "channels": integer(1, 8192),
    "y_channels": integer(1, 8192),
    "z_channels": integer(1, 8192),
    "context_channels": integer(1, 8192),
    "num_qualities": integer(1, 64),
    "gain_range": list_of(number(-30, 30), 2, 2),
}
CODEC_REQUIRED = ("latent_channels", "channels", "y_channels", "z_channels", "context_channels", "num_qualities")
CODING_SPEC: dict[str, Check] = {
    "intra_period": integer(0, 1 << 20),
    "t_n": number(0, 1, open_lo=True, open_hi=True),
    "steps": integer(0, 255),
}
PROFILE_ADAPTER_SPEC: dict[str, Check] = {
    "enabled": boolean,
    "context_channels": integer(1, 8192),
    "hidden_dim": integer(1, 1 << 14),
    "time_freq_dim": integer(1, 1 << 14),
}
PROFILE_REFINER_SPEC: dict[str, Check] = {
    "transformer": lambda v: None if isinstance(v, dict) else "must be an object",
    "null_text": lambda v: None if isinstance(v, dict) else "must be an object",
    "adapter": lambda v: None if v is None or isinstance(v, dict) else "must be an object or null",
    "max_latent_frames": integer(0, 1 << 16),
    "window_overlap": integer(0, 1 << 16),
}
REFINER_SPEC: dict[str, Check] = {
    "null_text": lambda v: None if isinstance(v, dict) else "must be an object",
    "adapter": lambda v: None if v is None or isinstance(v, dict) else "must be an object or null",
    "max_latent_frames": integer(0, 1 << 16),
    "window_overlap": integer(0, 1 << 16),
}
ADAPTER_SPEC: dict[str, Check] = {
    "context_channels": integer(1, 8192),
    "inner_dim": integer(1, 1 << 17),
    "num_layers": integer(1, 512),
    "patch_size": list_of(integer(1, 16), 3, 3),
    "hidden_dim": integer(1, 1 << 14),
    "time_freq_dim": integer(1, 1 << 14),
}
INDEX_SPEC: dict[str, Check] = {
    "_class_name": one_of("GnvcModel"),
    "gnvc_version": string(64),
    "profile": lambda v: None if isinstance(v, dict) else "must be an object",
    "weights_hash": lambda v: None if isinstance(v, str) and HEX16.match(v) else "must be 16 hex digits",
    "files": lambda v: (
        None
        if isinstance(v, dict)
        and all(isinstance(k, str) and isinstance(h, str) and SHA256.match(h) for k, h in v.items())
        else "must map file names to SHA-256 hex digests"
    ),
}


def _vae_class() -> type:
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan


def _transformer_class() -> type:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel


def check_vae_config(where: str, cfg: Any, *, diffusers_file: bool) -> dict[str, Any]:
    """A Wan VAE config (``vae/config.json`` when ``diffusers_file``, else a profile's ``vae:``)."""
    spec = dict(VAE_SPEC)
    if diffusers_file:
        spec |= DIFFUSERS_META | {"_class_name": one_of("AutoencoderKLWan")}
    extra = _signature_keys(_vae_class()) - set(spec)
    check_fields(where, cfg, spec, required=["_class_name"] if diffusers_file else (), extra=extra)
    z = cfg.get("z_dim", 16)
    for key in ("latents_mean", "latents_std"):
        if key in cfg and len(cfg[key]) != z:
            raise WeightsError(f"{where}: {key} has {len(cfg[key])} values but z_dim is {z}")
    if "temperal_downsample" in cfg and len(cfg["temperal_downsample"]) != len(cfg.get("dim_mult", [1, 2, 4, 4])) - 1:
        raise WeightsError(f"{where}: temperal_downsample needs one entry per dim_mult step after the first")
    return cfg


def check_transformer_config(where: str, cfg: Any, *, diffusers_file: bool) -> dict[str, Any]:
    spec = dict(TRANSFORMER_SPEC)
    if diffusers_file:
        spec |= DIFFUSERS_META | {"_class_name": one_of("WanTransformer3DModel")}
    extra = _signature_keys(_transformer_class()) - set(spec)
    return check_fields(where, cfg, spec, required=["_class_name"] if diffusers_file else (), extra=extra)


def check_codec_config(where: str, cfg: Any) -> dict[str, Any]:
    check_fields(where, cfg, CODEC_SPEC, required=CODEC_REQUIRED)
    lo, hi = cfg.get("gain_range", (-1.5, 1.5))
    if not lo < hi:
        raise WeightsError(f"{where}: gain_range must be increasing, got {[lo, hi]}")
    return cfg


def check_profile(where: str, profile: Any) -> dict[str, Any]:
    """A profile as stored in ``model_index.json`` (the full config every component was built from)."""
    spec: dict[str, Check] = {
        "name": string(64),
        "vae": lambda v: None if isinstance(v, dict) else "must be an object",
        "codec": lambda v: None if isinstance(v, dict) else "must be an object",
        "coding": lambda v: None if isinstance(v, dict) else "must be an object",
        "refiner": lambda v: None if v is None or isinstance(v, dict) else "must be an object or null",
    }
    check_fields(where, profile, spec, required=("name", "vae", "codec", "coding"))
    check_vae_config(f"{where}: profile.vae", profile["vae"], diffusers_file=False)
    check_codec_config(f"{where}: profile.codec", profile["codec"])
    check_fields(f"{where}: profile.coding", profile["coding"], CODING_SPEC)
    ref = profile.get("refiner")
    if ref:
        check_fields(f"{where}: profile.refiner", ref, PROFILE_REFINER_SPEC, required=("transformer",))
        check_transformer_config(f"{where}: profile.refiner.transformer", ref["transformer"], diffusers_file=False)
        check_fields(
            f"{where}: profile.refiner.null_text",
            ref.get("null_text", {}),
            {"length": integer(1, 1 << 14), "init": one_of("normal", "zeros")},
        )
        if ref.get("adapter"):
            check_fields(f"{where}: profile.refiner.adapter", ref["adapter"], PROFILE_ADAPTER_SPEC)
    return profile


# ---------------------------------------------------------------------------------------------- model directory
@dataclass
class ModelSpec:
    """What :func:`validate_model_dir` established about a directory (configs are validated dicts)."""

    path: Path
    profile: dict[str, Any]
    weights_hash: str
    vae: dict[str, Any]
    codec: dict[str, Any]
    refiner: dict[str, Any] | None = None
    transformer: dict[str, Any] | None = None
    parameters: int = 0
    files: dict[str, str] = field(default_factory=dict)


def read_index(path: Path) -> dict[str, Any]:
    """``model_index.json``, its fields and its profile validated."""
    index_file = path / INDEX_NAME
    if not path.is_dir():
        raise WeightsError(f"{path}: model directory not found (create one with `gnvc model init` or `dvc repro`)")
    if not index_file.is_file():
        raise WeightsError(f"{path}: not a gnvc model directory ({INDEX_NAME} is missing)")
    index = read_json(index_file)
    check_fields(str(index_file), index, INDEX_SPEC, required=("_class_name", "profile", "weights_hash"))
    check_profile(str(index_file), index["profile"])
    return index


def read_codec_config(path: str | Path) -> dict[str, Any]:
    """The validated codec config of a model directory, from JSON alone (the CLI reads the quality
    range with it before any model is loaded)."""
    path = Path(path)
    read_index(path)
    cfg_file = path / "codec" / "config.json"
    return check_codec_config(str(cfg_file), read_json(cfg_file))


def _check_files(path: Path, index: dict[str, Any]) -> dict[str, str]:
    files = refuse_pickles(path)
    for f in files:
        if f.suffix == ".json" and f.name != INDEX_NAME:
            read_json(f)  # every JSON must parse, even one nobody reads
    listed: dict[str, str] | None = index.get("files")
    if listed is None:
        return {}
    present = {f.relative_to(path).as_posix() for f in files if f.name != INDEX_NAME and f.suffix not in NOTE_SUFFIXES}
    for rel in sorted(present - set(listed)):
        raise WeightsError(f"{path / rel}: not part of the model as saved (not listed in {INDEX_NAME})")
    for rel, digest in sorted(listed.items()):
        if rel not in present:
            raise WeightsError(f"{path / rel}: missing (listed in {INDEX_NAME})")
        if sha256_file(path / rel) != digest:
            raise WeightsError(f"{path / rel}: contents differ from the SHA-256 recorded in {INDEX_NAME} (tampered?)")
    return listed


def _meta(build: Callable[[], torch.nn.Module], where: str) -> torch.nn.Module:
    """Build a module on the meta device: shapes and parameter counts with no memory allocated."""
    try:
        with torch.device("meta"):
            return build()
    except WeightsError:
        raise
    except Exception as e:  # a config the constructor rejects despite the schema (e.g. indivisible dims)
        raise WeightsError(f"{where}: the config does not build ({type(e).__name__}: {e})"[:400]) from None


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def validate_model_dir(path: str | Path) -> ModelSpec:
    """Check a model directory completely (files, configs, sizes, tensor headers) without loading
    any tensor; returns the validated configs. Raises :class:`WeightsError` naming the bad file."""
    from gnvc.codec.latent_codec import ContextualLatentCodec

    path = Path(path)
    index = read_index(path)
    profile = index["profile"]
    files = _check_files(path, index)

    vae_file = path / "vae" / "config.json"
    vae_cfg = check_vae_config(str(vae_file), read_json(vae_file), diffusers_file=True)
    codec_file = path / "codec" / "config.json"
    codec_cfg = check_codec_config(str(codec_file), read_json(codec_file))
    _same(vae_file, "profile.vae", profile["vae"], vae_cfg)
    _same(codec_file, "profile.codec", profile["codec"], codec_cfg)
    z_dim = vae_cfg.get("z_dim", 16)
    if codec_cfg["latent_channels"] != z_dim:
        raise WeightsError(f"{codec_file}: latent_channels {codec_cfg['latent_channels']} ≠ the VAE's z_dim {z_dim}")

    vae_kwargs = {k: v for k, v in vae_cfg.items() if not k.startswith("_")}
    vae = _meta(lambda: _vae_class()(**vae_kwargs), str(vae_file))
    codec = _meta(lambda: ContextualLatentCodec.from_config(codec_cfg), str(codec_file))
    spec = ModelSpec(path, profile, index["weights_hash"], vae_cfg, codec_cfg, files=files)
    spec.parameters = _count(vae) + _count(codec)
    modules: list[tuple[Path, torch.nn.Module, bool]] = [(path / "vae", vae, True), (path / "codec", codec, False)]

    if profile.get("refiner"):
        if not (path / "refiner").is_dir():
            raise WeightsError(f"{path}: profile {profile['name']!r} has a refiner but refiner/ is missing")
        spec.refiner, spec.transformer, transformer, adapter = _refiner_configs(path, profile, vae_cfg, codec_cfg)
        spec.parameters += _count(transformer) + (_count(adapter) if adapter is not None else 0)
        modules.append((path / "refiner" / "transformer", transformer, True))
    elif (path / "refiner").exists():
        raise WeightsError(f"{path / 'refiner'}: present, but profile {profile['name']!r} has no refiner")
    if spec.parameters > MAX_PARAMETERS:
        raise WeightsError(
            f"{path / INDEX_NAME}: the configs describe {spec.parameters / 1e9:.2f}·10⁹ parameters, more than "
            f"the {MAX_PARAMETERS / 1e9:.0f}·10⁹ gnvc loads; refusing before allocating them"
        )

    for folder, module, diffusers in modules:
        if diffusers:
            found = diffusers_weights(folder)
            check_tensors(folder / VAE_WEIGHTS, found, expected_tensors(module), float_any=True)
        else:
            w = folder / "model.safetensors"
            check_tensors(w, read_safetensors_header(w), expected_tensors(module))
    if spec.refiner is not None:
        w = path / "refiner" / "refiner.safetensors"
        want = {"null_text": TensorInfo("F32", (spec.refiner["null_text"]["length"], spec.refiner["null_text"]["dim"]))}
        if adapter is not None:
            want |= {f"adapter.{k}": v for k, v in expected_tensors(adapter).items()}
        check_tensors(w, read_safetensors_header(w), want)
    return spec


def _same(file: Path, section: str, profile_part: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Every key the profile's section gives must have the same value in the component's config."""
    for key, value in profile_part.items():
        if key in cfg and _norm(cfg[key]) != _norm(value):
            raise WeightsError(
                f"{file}: {key} = {cfg[key]!r} disagrees with {section}.{key} = {value!r} in {INDEX_NAME}"
            )


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def _refiner_configs(
    path: Path, profile: dict[str, Any], vae_cfg: dict[str, Any], codec_cfg: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], torch.nn.Module, torch.nn.Module | None]:
    from gnvc.refiner.adapter import ContextAdapter

    ref_file = path / "refiner" / "config.json"
    ref = check_fields(str(ref_file), read_json(ref_file), REFINER_SPEC, required=("null_text", "adapter"))
    check_fields(
        f"{ref_file}: null_text",
        ref["null_text"],
        {"length": integer(1, 1 << 14), "dim": DIM},
        required=("length", "dim"),
    )
    t_file = path / "refiner" / "transformer" / "config.json"
    tcfg = check_transformer_config(str(t_file), read_json(t_file), diffusers_file=True)
    _same(t_file, "profile.refiner.transformer", profile["refiner"]["transformer"], tcfg)
    z_dim = vae_cfg.get("z_dim", 16)
    for key in ("in_channels", "out_channels"):
        if tcfg.get(key, 16) != z_dim:
            raise WeightsError(f"{t_file}: {key} {tcfg.get(key, 16)} ≠ the VAE's z_dim {z_dim}")
    if ref["null_text"]["dim"] != tcfg.get("text_dim", 4096):
        raise WeightsError(f"{ref_file}: null_text.dim {ref['null_text']['dim']} ≠ the DiT's text_dim")
    heads, head_dim = tcfg.get("num_attention_heads", 40), tcfg.get("attention_head_dim", 128)
    adapter_cfg = ref["adapter"]
    if adapter_cfg is not None:
        where = f"{ref_file}: adapter"
        check_fields(where, adapter_cfg, ADAPTER_SPEC, required=tuple(ADAPTER_SPEC))
        if adapter_cfg["context_channels"] != codec_cfg["context_channels"]:
            raise WeightsError(
                f"{where}: context_channels {adapter_cfg['context_channels']} ≠ the codec's "
                f"context_channels {codec_cfg['context_channels']}"
            )
        for key, want in (
            ("inner_dim", heads * head_dim),
            ("num_layers", tcfg.get("num_layers", 40)),
            ("patch_size", list(tcfg.get("patch_size", [1, 2, 2]))),
        ):
            if adapter_cfg[key] != want:
                raise WeightsError(f"{where}: {key} {adapter_cfg[key]} ≠ the DiT's {want}")
    t_kwargs = {k: v for k, v in tcfg.items() if not k.startswith("_")}
    if "patch_size" in t_kwargs:
        t_kwargs["patch_size"] = tuple(t_kwargs["patch_size"])
    # Size first, from the config alone: an absurd DiT is refused before even a meta build.
    rough = tcfg.get("num_layers", 40) * (
        4 * (heads * head_dim) ** 2 * 2 + 2 * heads * head_dim * tcfg.get("ffn_dim", 13824)
    )
    if rough > MAX_PARAMETERS:
        raise WeightsError(
            f"{t_file}: about {rough / 1e9:.1f}·10⁹ parameters, more than the {MAX_PARAMETERS / 1e9:.0f}·10⁹ gnvc loads"
        )
    transformer = _meta(lambda: _transformer_class()(**t_kwargs), str(t_file))
    adapter = None
    if adapter_cfg is not None:
        adapter = _meta(lambda: ContextAdapter(**adapter_cfg), str(ref_file))
    return ref, tcfg, transformer, adapter


# ---------------------------------------------------------------------------------------------- checkpoints
CHECKPOINT_STATE = "state.safetensors"
CHECKPOINT_META = "trainer.json"
CHECKPOINT_SPEC: dict[str, Check] = {
    "name": string(256),
    "step": integer(0, 1 << 40),
    "fingerprint": string(256),
    "optimizer": lambda v: (
        None
        if isinstance(v, dict) and isinstance(v.get("param_groups"), list) and isinstance(v.get("state"), dict)
        else "must be an object with param_groups (list) and state (object)"
    ),
    "scheduler": lambda v: None if isinstance(v, dict) else "must be an object",
    "streams": lambda v: (
        None
        if isinstance(v, dict) and all(_is_int(n) and n >= 0 for n in v.values())
        else "must map stream names to item counts"
    ),
    "rng_python": lambda v: None if isinstance(v, list) and len(v) == 3 else "must be Python's random state",
    "rng_numpy": lambda v: (
        None
        if isinstance(v, list) and len(v) == 5 and isinstance(v[1], list) and len(v[1]) == 624
        else "must be NumPy's MT19937 state"
    ),
    "history": lambda v: None if isinstance(v, list) else "must be a list",
    "moments": optional(boolean),  # false: a finished run's export, without Adam's moments
}
CHECKPOINT_REQUIRED = tuple(k for k in CHECKPOINT_SPEC if k != "moments")
CHECKPOINT_TENSOR = re.compile(
    r"^(model\.[A-Za-z0-9_]+\..+|optim\.\d+\.[A-Za-z0-9_]+|rng\.(torch_cpu|generator|cuda\.\d+))$"
)


def validate_checkpoint(ckpt: str | Path, modules: dict[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Check a training checkpoint (``state.safetensors`` + ``trainer.json``) before it is restored.

    Only those two files may be there (no pickle), ``trainer.json`` has the runner's fields with the
    right types, and the tensor header declares only the runner's names: ``model.<module>.<key>``
    (with ``modules``: exactly each module's trainable tensors, shapes included, any float dtype,
    since an exported checkpoint holds bf16), ``optim.<id>.<name>`` and ``rng.*`` as uint8.
    Returns the parsed ``trainer.json``.
    """
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise WeightsError(f"{ckpt}: checkpoint directory not found")
    for f in refuse_pickles(ckpt):
        if f.name not in (CHECKPOINT_STATE, CHECKPOINT_META):
            raise WeightsError(f"{f}: unexpected file in a checkpoint (only {CHECKPOINT_STATE} and {CHECKPOINT_META})")
    meta_file, state_file = ckpt / CHECKPOINT_META, ckpt / CHECKPOINT_STATE
    meta = check_fields(str(meta_file), read_json(meta_file), CHECKPOINT_SPEC, required=CHECKPOINT_REQUIRED)
    found = read_safetensors_header(state_file)
    for name, info in found.items():
        if not CHECKPOINT_TENSOR.match(name):
            raise WeightsError(f"{state_file}: unexpected tensor {name!r}")
        if name.startswith("rng.") and (info.dtype != "U8" or len(info.shape) != 1):
            raise WeightsError(
                f"{state_file}: RNG state {name!r} must be a uint8 vector, got {info.dtype}{list(info.shape)}"
            )
    for name in ("rng.torch_cpu", "rng.generator"):
        if name not in found:
            raise WeightsError(f"{state_file}: tensor {name!r} is missing")
    if modules is not None:
        from gnvc.training.runner import _trainable_state

        for mname, module in modules.items():
            prefix = f"model.{mname}."
            have = {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}
            params = {n for n, _ in module.named_parameters()}
            # Buffers (entropy tables, integer weights) may be rebuilt with other shapes: bounded only.
            want = {
                prefix + k: TensorInfo(
                    TORCH_TO_SAFETENSORS.get(v.dtype, str(v.dtype)), tuple(v.shape) if k in params else None
                )
                for k, v in _trainable_state(module).items()
            }
            check_tensors(state_file, {prefix + k: v for k, v in have.items()}, want, float_any=True)
        known = {f"model.{m}." for m in modules}
        for name in found:
            if name.startswith("model.") and not any(name.startswith(p) for p in known):
                raise WeightsError(f"{state_file}: tensor {name!r} belongs to no module being trained")
    return meta
