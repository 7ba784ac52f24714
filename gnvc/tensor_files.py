"""Compact, lossless safetensors storage: each tensor in the narrowest dtype that holds it exactly.

Why: a shipped model directory must stay small enough for git (the release is ≤ 50 MB), yet the
model a user loads must be *the* model whose weights hash every bitstream carries. So storage is
lossless: a float32 tensor whose values are all float16 (or bfloat16) numbers is written as such,
an int32/int64 table whose values fit int8/int16 likewise (the codec's integer weights are < 2^15
by the format's rule), and the file's ``__metadata__`` records each narrowed tensor's real dtype
under :data:`LOGICAL_DTYPES_KEY`. :func:`load_tensors` widens them back, so the tensors in memory —
and the weights hash — equal those that were saved. Making a model's weights float16-representable
in the first place is a separate, lossy and explicit step (``gnvc model pack --half``).

Diffusers components (the VAE, the DiT) are compacted too (floats only): diffusers' own loader
casts every floating tensor to the model's float32 parameters, which restores them exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

LOGICAL_DTYPES_KEY = "gnvc.logical_dtypes"

# Logical dtype -> the narrower storage dtypes tried, narrowest first. Nothing else is narrowed.
NARROWER: dict[torch.dtype, tuple[torch.dtype, ...]] = {
    torch.float32: (torch.float16, torch.bfloat16),
    torch.int32: (torch.int8, torch.int16),
    torch.int64: (torch.int8, torch.int16, torch.int32),
}
DTYPE_NAMES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in NARROWER}


def narrowest_dtype(t: torch.Tensor) -> torch.dtype:
    """The narrowest dtype that stores ``t`` exactly (round trip equal, NaNs never narrowed)."""
    for candidate in NARROWER.get(t.dtype, ()):
        narrow = t.to(candidate)
        if torch.equal(narrow.to(t.dtype), t) and (not t.is_floating_point() or bool(torch.isfinite(narrow).all())):
            return candidate
    return t.dtype


def compact_file(path: str | Path, *, integers: bool = True) -> tuple[int, int]:
    """Rewrite a safetensors file with every tensor in its narrowest exact dtype (atomically).

    ``integers=False`` narrows floats only (for files another library loads, which widens floats
    but would keep a narrowed integer table narrow). Returns the file's (old, new) size in bytes.
    """
    path = Path(path)
    before = path.stat().st_size
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    logical = json.loads(metadata.get(LOGICAL_DTYPES_KEY, "{}"))
    out = {}
    for name, t in tensors.items():
        dtype = narrowest_dtype(t) if (t.is_floating_point() or integers) else t.dtype
        if dtype != t.dtype:
            logical[name] = str(t.dtype).removeprefix("torch.")
        out[name] = t.to(dtype).contiguous()
    if logical:
        metadata[LOGICAL_DTYPES_KEY] = json.dumps(logical, sort_keys=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(out, str(tmp), metadata=metadata or None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return before, path.stat().st_size


def logical_dtypes(metadata: dict[str, str] | None) -> dict[str, str]:
    """``{tensor: logical dtype name}`` recorded by :func:`compact_file` (empty when none).

    Raises ``ValueError`` for a record that is not a JSON object of known dtype names."""
    raw = (metadata or {}).get(LOGICAL_DTYPES_KEY)
    if raw is None:
        return {}
    record = json.loads(raw)
    if not isinstance(record, dict) or not all(isinstance(v, str) and v in DTYPE_NAMES for v in record.values()):
        raise ValueError(f"{LOGICAL_DTYPES_KEY} must map tensor names to one of {sorted(DTYPE_NAMES)}")
    return record


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file in its logical dtype (narrowed ones widened back).

    Raises ``ValueError`` when a recorded logical dtype is not a widening of the stored one."""
    with safe_open(str(path), framework="pt") as f:
        logical = logical_dtypes(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    for name, dtype_name in logical.items():
        if name not in tensors:
            raise ValueError(f"{LOGICAL_DTYPES_KEY} names {name!r}, which the file does not hold")
        dtype = DTYPE_NAMES[dtype_name]
        if tensors[name].dtype not in NARROWER[dtype]:
            raise ValueError(f"tensor {name!r} is stored as {tensors[name].dtype}, not a narrowing of {dtype}")
        tensors[name] = tensors[name].to(dtype)
    return tensors
