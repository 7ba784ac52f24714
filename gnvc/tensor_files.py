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
import math
import os
import sys
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import safe_open

LOGICAL_DTYPES_KEY = "gnvc.logical_dtypes"

# Logical dtype -> the narrower storage dtypes tried, narrowest first. Nothing else is narrowed.
NARROWER: dict[torch.dtype, tuple[torch.dtype, ...]] = {
    torch.float32: (torch.float16, torch.bfloat16),
    torch.int32: (torch.int8, torch.int16),
    torch.int64: (torch.int8, torch.int16, torch.int32),
}
DTYPE_NAMES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in NARROWER}

# safetensors' dtype codes for what gnvc writes itself.
_ST_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class SafetensorsWriter:
    """One safetensors file written tensor by tensor, byte for byte the same on every run.

    Why not ``safetensors.torch.save_file``: it keeps ``__metadata__`` in a Rust hash map, so a file
    with two metadata keys comes out in either key order — the same tensors, different bytes, and a
    needless new blob in git or the DVC cache each time a release is repacked. Here the header is
    JSON with sorted metadata keys, in the order of ``specs``; and since the header (names, dtypes,
    shapes, offsets) is known up front, no tensor needs to be in memory before or after its turn.
    """

    def __init__(
        self,
        path: Path,
        specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        header: dict[str, object] = {"__metadata__": dict(sorted((metadata or {"format": "pt"}).items()))}
        offset = 0
        for key, dtype, shape in specs:
            n = math.prod(shape) * dtype.itemsize
            header[key] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
        self.path = path
        self.size = offset
        self._order = [key for key, _, _ in specs]
        self._next = 0
        self._file: BinaryIO = path.open("wb")
        self._file.write(len(raw).to_bytes(8, "little") + raw)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        if self._order[self._next] != key:
            raise RuntimeError(f"{self.path.name}: expected tensor {self._order[self._next]!r}, got {key!r}")
        if sys.byteorder != "little":  # pragma: no cover - every machine gnvc runs on
            raise RuntimeError("safetensors data is little-endian")
        self._file.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()).cast("B"))
        self._next += 1

    def close(self) -> None:
        self._file.close()
        if self._next != len(self._order):
            raise RuntimeError(f"{self.path.name}: {len(self._order) - self._next} tensor(s) never written")


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` reproducibly (see :class:`SafetensorsWriter`), in safetensors' own order:
    widest dtype first, then by name, so every tensor's data stays aligned to its item size."""
    order = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    writer = SafetensorsWriter(
        Path(path), [(k, tensors[k].dtype, tuple(tensors[k].shape)) for k in order], metadata=metadata
    )
    try:
        for k in order:
            writer.write(k, tensors[k])
    finally:
        writer.close()


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
        save_tensors(out, tmp, metadata=metadata or None)
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
