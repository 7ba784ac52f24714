"""Fuzz the whole ``.gnvc`` decode path: container parser, rANS entropy decoding, integer loop, VAE, refiner.

    python bench/fuzz_decoder.py --runs 100000 --seed 0 [--timeout 30] [--mem-limit-mb 2048]
    python bench/fuzz_decoder.py --replay tests/data/fuzz       # regression: every stored case
    python bench/fuzz_decoder.py --runs 2000 --coverage         # + line coverage of the decode path

The builtin engine is a format-aware mutator seeded with the committed golden streams
(tests/data/golden): it parses each seed into header fields, records (type, length, CRCs, z and y
rANS streams), seek index and footer, and mutates at that level — bit flips (CRCs repaired or not,
so that corrupt bytes also reach the entropy decoder), truncations, splices of two streams, edits
of every length, size, count and offset field (boundary and huge values), huge declared frame
sizes, record drops/duplicates/swaps, forged seek-index entries, bytes slipped in before the index,
and random bytes. Mutation ``i`` of run seed ``S`` depends on ``(S, i)`` only, so any finding
replays exactly (``--only I``).

Every stream is decoded by a forked worker process (the models are loaded once, before the fork)
with an address-space limit (``RLIMIT_AS`` = the worker's size + ``--mem-limit-mb``) and a wall
clock limit (the parent kills a worker that does not answer within ``--timeout`` seconds). A stream
whose weights hash is the refiner model's is decoded by that model (the golden model plus a tiny
refiner) with ``--steps 1``; every other stream by the golden model with ``--steps 0``; so the
refiner runs on a third of the streams. Outcomes: ``ok`` (decoded), ``gnvc`` (a ``GnvcError`` with
a message: the only acceptable failure), and the findings ``exception`` (any other exception, or a
``GnvcError`` without a message), ``oom`` (MemoryError or an allocation failure under the limit),
``crash`` (the worker died from a signal), ``hang`` (no answer in time). Findings are written to
``--crash-dir``; the JSON report goes to ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import re
import resource
import select
import signal
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
FUZZ_DATA = ROOT / "tests" / "data" / "fuzz"
FINDINGS = ("exception", "oom", "crash", "hang")
DECODE_PATH = (
    "gnvc/codec/container.py",
    "gnvc/codec/entropy.py",
    "gnvc/codec/integer.py",
    "gnvc/codec/latent_codec.py",
    "gnvc/codec/layers.py",
    "gnvc/videocodec/decoder.py",
    "gnvc/videocodec/frames.py",
    "gnvc/refiner/stream.py",
    "gnvc/models/vae.py",
)
# A refiner small enough that a steps-1 decode costs about what the VAE does (the golden model has none).
TINY_REFINER = {
    "transformer": {
        "patch_size": [1, 2, 2],
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 16,
        "freq_dim": 16,
        "ffn_dim": 32,
        "num_layers": 1,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
    },
    "null_text": {"length": 2, "init": "normal"},
    "adapter": {"context_channels": 8, "hidden_dim": 16},
    "max_latent_frames": 4,
    "window_overlap": 1,
}
HEADER_FIELDS = struct.Struct("<HHIIIBfBII")
FIELD_NAMES = ("width", "height", "frames", "fps_num", "fps_den", "quality", "t_n", "steps", "seed", "intra")


# ---------------------------------------------------------------------------------------------- stream model
@dataclass
class Rec:
    kind: int
    latent_crc: int
    z: bytes
    y: bytes


@dataclass
class Parsed:
    """A valid seed stream, split into the fields the mutator edits; ``pack`` writes it back."""

    prefix: bytes  # magic, version, profile, weights hash
    fields: list  # the HEADER_FIELDS values
    records: list[Rec]
    index: list[tuple[int, int, int]]

    @classmethod
    def parse(cls, data: bytes) -> Parsed:
        plen = data[5]
        pre = 6 + plen + 8
        fields = list(HEADER_FIELDS.unpack_from(data, pre))
        pos = pre + HEADER_FIELDS.size + 4
        (index_at,) = struct.unpack_from("<Q", data, len(data) - 12)
        records = []
        while pos < index_at:
            kind = data[pos]
            n, pos = _varint(data, pos + 1)
            lcrc = struct.unpack_from("<I", data, pos)[0]
            payload = data[pos + 8 : pos + 8 + n]
            pos += 8 + n
            zl, p = _varint(payload, 0)
            z = payload[p : p + zl]
            yl, p = _varint(payload, p + zl)
            records.append(Rec(kind, lcrc, z, payload[p : p + yl]))
        count, p = _varint(data, index_at + 4)
        index = []
        for _ in range(count):
            a, p = _varint(data, p)
            b, p = _varint(data, p)
            c, p = _varint(data, p)
            index.append((a, b, c))
        return cls(data[:pre], fields, records, index)

    def pack(self, edits: dict | None = None) -> bytes:
        """Serialise, applying ``edits`` (forged lengths, counts, offsets, CRC breakage, gaps)."""
        e = edits or {}
        head = bytearray(self.prefix) + _pack_fields(self.fields)
        hcrc = zlib.crc32(head) ^ (1 if e.get("break_header_crc") else 0)
        out = bytearray(head + struct.pack("<I", hcrc))
        offsets = []
        for i, r in enumerate(self.records):
            if r.kind == ord("I"):
                offsets.append(len(out))
            zl = e.get(("zlen", i), len(r.z))
            yl = e.get(("ylen", i), len(r.y))
            payload = _enc_varint(zl) + r.z + _enc_varint(yl) + r.y + e.get(("extra", i), b"")
            plen = e.get(("plen", i), len(payload))
            lcrc = struct.pack("<I", r.latent_crc)
            pcrc = zlib.crc32(lcrc + payload) ^ (1 if e.get(("break_crc", i)) else 0)
            out += bytes([r.kind]) + _enc_varint(plen) + lcrc + struct.pack("<I", pcrc) + payload
        out += e.get("gap", b"")
        index_at = len(out)
        entries = e.get("index", None)
        if entries is None:
            entries = [(a, offsets[k] if k < len(offsets) else b, c) for k, (a, b, c) in enumerate(self.index)]
        body = bytearray(b"GIDX" + _enc_varint(e.get("count", len(entries))))
        for a, b, c in entries:
            body += _enc_varint(a) + _enc_varint(b) + _enc_varint(c)
        icrc = zlib.crc32(body) ^ (1 if e.get("break_index_crc") else 0)
        out += body + struct.pack("<I", icrc)
        out += struct.pack("<Q", e.get("index_at", index_at)) + e.get("footer_magic", b"GEND")
        return bytes(out)


def _pack_fields(f: list) -> bytes:
    return HEADER_FIELDS.pack(*f)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def repair_crcs(data: bytes) -> bytes:
    """Recompute every CRC a lenient walk of ``data`` finds (header, payloads, index), so that damage
    elsewhere reaches the layers behind the CRC checks. Stops quietly where the structure breaks."""
    out = bytearray(data)
    try:
        pre = 6 + out[5] + 8
        end = pre + HEADER_FIELDS.size
        if end + 4 > len(out):
            return bytes(out)
        out[end : end + 4] = struct.pack("<I", zlib.crc32(out[:end]))
        pos = end + 4
        index_at = struct.unpack_from("<Q", out, len(out) - 12)[0] if len(out) >= 12 else len(out)
        while pos < min(index_at, len(out)) and out[pos] in (0x49, 0x50):
            n, p = _varint(out, pos + 1)
            if p + 8 + n > len(out):
                break
            out[p + 4 : p + 8] = struct.pack("<I", zlib.crc32(bytes(out[p : p + 4]) + bytes(out[p + 8 : p + 8 + n])))
            pos = p + 8 + n
        if 0 <= index_at <= len(out) - 16 and out[index_at : index_at + 4] == b"GIDX":
            count, p = _varint(out, index_at + 4)
            for _ in range(min(count, 1 << 16) * 3):
                _, p = _varint(out, p)
            if p + 4 <= len(out):
                out[p : p + 4] = struct.pack("<I", zlib.crc32(bytes(out[index_at:p])))
    except (IndexError, struct.error):
        pass
    return bytes(out)


# ---------------------------------------------------------------------------------------------- mutator
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 4095, 4096, 16383,
               16384, 16385, 65535, 65536, 2**24, 2**30, 2**30 + 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62,
               2**63 - 1]  # fmt: skip
FIELD_MAX = {"width": 0xFFFF, "height": 0xFFFF, "quality": 255, "steps": 255}


class Mutator:
    """Reproducible, format-aware mutations of the seed streams: ``mutate(i)`` depends on (seed, i) only."""

    def __init__(self, seeds: dict[str, bytes], seed: int) -> None:
        self.names = sorted(seeds)
        # Decoding cost grows with frame size and count: the short committed seeds carry most of the load.
        self.weights = [
            4.0 if n.startswith("seed-") else 0.3 if n.startswith(("96x80", "128x96")) else 1.0 for n in self.names
        ]
        self.seeds = seeds
        self.parsed = {k: Parsed.parse(v) for k, v in seeds.items()}
        self.seed = seed
        self.ops = [
            (self.flip, 14), (self.truncate, 8), (self.splice, 8), (self.edit_field, 16), (self.huge_size, 5),
            (self.random_bytes, 6), (self.entropy, 16), (self.benign, 4), (self.record_level, 8),
            (self.index_forgery, 6), (self.stack, 5),
        ]  # fmt: skip

    def mutate(self, i: int) -> tuple[str, str, bytes]:
        """(operator, description, stream) of mutation ``i``."""
        rng = random.Random(f"{self.seed}:{i}")
        name = rng.choices(self.names, self.weights)[0]
        op = rng.choices([o for o, _ in self.ops], [w for _, w in self.ops])[0]
        desc, data = op(rng, name)
        return op.__name__, f"{name}:{desc}", data

    # -- byte level
    def flip(self, rng: random.Random, name: str, data: bytes | None = None) -> tuple[str, bytes]:
        buf = bytearray(self.seeds[name] if data is None else data)
        if not buf:
            return "flip-empty", b""
        k = rng.choice([1, 1, 2, 3, 8])
        for _ in range(k):
            p = rng.randrange(len(buf))
            buf[p] ^= 1 << rng.randrange(8)
        fix = rng.random() < 0.7
        return f"flip{k}{'+crc' if fix else ''}", repair_crcs(bytes(buf)) if fix else bytes(buf)

    def truncate(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        data = self.seeds[name]
        cut = rng.choice([rng.randrange(len(data)), len(data) - rng.randrange(1, 20), rng.randrange(60)])
        cut = max(0, cut)
        if rng.random() < 0.3:  # keep the footer: the index then points past the end
            return f"truncate-mid{cut}", data[:cut] + data[-12:]
        return f"truncate{cut}", data[:cut]

    def splice(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        a, b = self.seeds[name], self.seeds[rng.choice(self.names)]
        ca, cb = rng.randrange(len(a) + 1), rng.randrange(len(b) + 1)
        if rng.random() < 0.5:  # the same offset in both: a header of one, the records of another
            cb = min(ca, len(b))
        out = a[:ca] + b[cb:]
        fix = rng.random() < 0.6
        return f"splice{ca}/{cb}{'+crc' if fix else ''}", repair_crcs(out) if fix else out

    def random_bytes(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        data = bytearray(self.seeds[name])
        mode = rng.randrange(5)
        if mode == 0:
            return "random", rng.randbytes(rng.choice([0, 1, 3, 4, 11, 12, 40, 200, 2000]))
        if mode == 1:
            return "magic+random", b"GNVC\x02" + rng.randbytes(rng.randrange(300))
        p = rng.randrange(len(data))
        n = rng.randrange(1, 33)
        if mode == 2:
            data[p : p + n] = rng.randbytes(min(n, len(data) - p))
        elif mode == 3:
            data[p:p] = rng.randbytes(n)
        else:
            del data[p : p + n]
        fix = rng.random() < 0.6
        return f"bytes{mode}@{p}+{n}{'+crc' if fix else ''}", repair_crcs(bytes(data)) if fix else bytes(data)

    # -- field level
    def _value(self, rng: random.Random, old: int) -> int:
        r = rng.random()
        if r < 0.5:
            return rng.choice(INTERESTING)
        if r < 0.8:
            return max(0, old + rng.choice([-2, -1, 1, 2, 4]))
        return rng.randrange(1 << rng.choice([8, 16, 32, 40]))

    def edit_field(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        p = copy.deepcopy(self.parsed[name])
        e: dict = {}
        where = rng.randrange(4)
        if where == 0:  # a header field
            k = rng.randrange(len(FIELD_NAMES))
            fname = FIELD_NAMES[k]
            if fname == "t_n":
                p.fields[k] = rng.choice([0.0, 1.0, -0.5, 1e-30, 0.999999, float("nan"), float("inf"), 1e30])
            else:
                limit = FIELD_MAX.get(fname, 0xFFFFFFFF)
                p.fields[k] = min(self._value(rng, p.fields[k]), limit)
            desc = f"field-{fname}={p.fields[k]}"
        elif where == 1:  # a record's length fields or type
            i = rng.randrange(len(p.records))
            what = rng.choice(["plen", "zlen", "ylen", "kind", "lcrc", "extra"])
            if what == "kind":
                p.records[i].kind = rng.choice([ord("I"), ord("P"), 0, 0xFF])
            elif what == "lcrc":
                p.records[i].latent_crc = rng.randrange(1 << 32)
            elif what == "extra":
                e[("extra", i)] = rng.randbytes(rng.randrange(1, 9))
            else:
                r = p.records[i]
                old = {"plen": len(r.z) + len(r.y) + 2, "zlen": len(r.z), "ylen": len(r.y)}[what]
                e[(what, i)] = min(self._value(rng, old), 2**63 - 1)
            desc = f"record{i}-{what}={e.get((what, i), '')}"
        elif where == 2:  # index count, an entry, or the footer's offset
            what = rng.choice(["count", "entry", "index_at", "footer_magic"])
            if what == "count":
                e["count"] = self._value(rng, len(p.index))
            elif what == "entry":
                entries = [list(x) for x in p.index]
                k, j = rng.randrange(len(entries)), rng.randrange(3)
                entries[k][j] = self._value(rng, entries[k][j])
                e["index"] = [tuple(x) for x in entries]
            elif what == "index_at":
                e["index_at"] = self._value(rng, len(self.seeds[name]) - 20)
            else:
                e["footer_magic"] = rng.choice([b"GENX", b"\0\0\0\0"])
            desc = f"index-{what}"
        else:  # the profile name or the version byte
            pre = bytearray(p.prefix)
            if rng.random() < 0.5:
                pre[4] = rng.choice([0, 1, 3, 255])
                desc = f"version={pre[4]}"
            else:
                pre[6] ^= 0x80
                desc = "profile-non-ascii"
            p.prefix = bytes(pre)
        return desc, p.pack(e)

    def huge_size(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        p = copy.deepcopy(self.parsed[name])
        side = [1024, 2048, 4096, 8192, 16384]
        w, h = rng.choice(side), rng.choice(side)
        p.fields[0], p.fields[1] = w, h
        if rng.random() < 0.3:
            p.fields[2] = rng.choice([10_000_000, 1 << 20])
        if rng.random() < 0.3:
            p.fields[9] = rng.choice([1, 2, 10_000_000])
        return f"huge{w}x{h}f{p.fields[2]}i{p.fields[9]}", p.pack()

    def entropy(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        """Damage a z or y rANS stream behind a repaired payload CRC: only the entropy layer can object."""
        p = copy.deepcopy(self.parsed[name])
        i = rng.randrange(len(p.records))
        r = p.records[i]
        which = rng.choice("zy")
        s = bytearray(getattr(r, which))
        mode = rng.randrange(8)
        if mode == 0 and s:
            for _ in range(rng.choice([1, 2, 4])):
                q = rng.randrange(len(s))
                s[q] ^= 1 << rng.randrange(8)
        elif mode == 1:
            s = s[: rng.randrange(len(s) + 1)]  # truncated (often not a whole number of words)
        elif mode == 2:
            s = s[: max(0, len(s) - 4 * rng.randrange(1, 3))]  # whole words short
        elif mode == 3:
            s += rng.choice([b"\0\0\0\0", b"\xff\xff\xff\xff", rng.randbytes(4), rng.randbytes(rng.randrange(1, 9))])
        elif mode == 4:
            s = bytearray(rng.choice([b"", b"\0" * 8, b"\xff" * 8, b"\xff" * 64, rng.randbytes(8)]))
        elif mode == 5 and len(s) >= 4:
            q = 4 * rng.randrange(len(s) // 4)
            s[q : q + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", rng.randbytes(4)])
        elif mode == 6:
            s = bytearray(getattr(p.records[rng.randrange(len(p.records))], "zy"[rng.randrange(2)]))  # a swap
        else:
            s = bytearray(rng.randbytes(4 * rng.randrange(1, 64)))
        setattr(r, which, bytes(s))
        return f"entropy{mode}-rec{i}{which}", p.pack()

    def benign(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        """Header edits that leave the latents alone: they reach the VAE and the refiner."""
        p = copy.deepcopy(self.parsed[name])
        k = rng.choice([3, 4, 6, 8])
        if k == 6:
            p.fields[6] = rng.choice([1e-6, 0.01, 0.5, 0.999, rng.random() or 0.5])
        elif k == 8:
            p.fields[8] = rng.randrange(1 << 32)
        else:
            p.fields[k] = rng.choice([1, 1001, 30000, 2**32 - 1])
        return f"benign-{FIELD_NAMES[k]}", p.pack()

    def record_level(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        p = copy.deepcopy(self.parsed[name])
        n = len(p.records)
        mode = rng.randrange(5)
        i, j = rng.randrange(n), rng.randrange(n)
        if mode == 0 and n > 1:
            del p.records[i]
        elif mode == 1:
            p.records.insert(i, copy.deepcopy(p.records[j]))
        elif mode == 2:
            p.records[i], p.records[j] = p.records[j], p.records[i]
        elif mode == 3:  # a record of another stream at the same position
            other = self.parsed[rng.choice(self.names)]
            if i < len(other.records):
                p.records[i] = copy.deepcopy(other.records[i])
        else:
            p.records[i].kind = ord("P") if p.records[i].kind == ord("I") else ord("I")
        return f"records{mode}-{i}/{j}", p.pack()

    def index_forgery(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        """CRC-valid lies in the seek index, and bytes slipped in between the last record and the index."""
        p = copy.deepcopy(self.parsed[name])
        base = p.pack()
        q = Parsed.parse(base)
        offsets = [e[1] for e in q.index]
        mode = rng.randrange(3)
        if mode == 0:
            gap = rng.choice([b"\0", b"I", rng.randbytes(rng.randrange(1, 17))])
            return f"gap{len(gap)}", p.pack({"gap": gap})
        entries = list(q.index)
        s = rng.randrange(len(entries))
        a, b, c = entries[s]
        if mode == 1:
            b = b + rng.choice([-9, -1, 1, 2, 9]) if s or rng.random() < 0.5 else b + 1
        else:
            recs = [r for r in _record_offsets(base) if r != b]  # another record: never a no-op
            b = rng.choice(recs) if recs else b + 1
        entries[s] = (a, max(0, b), c)
        return f"forged-entry{s}{'+' if mode == 1 else '=rec'}{b - offsets[s]}", p.pack({"index": entries})

    def stack(self, rng: random.Random, name: str) -> tuple[str, bytes]:
        desc, data = rng.choice([self.edit_field, self.entropy, self.record_level, self.huge_size])(rng, name)
        desc2, data = self.flip(rng, name, data)
        return f"{desc}+{desc2}", data


def _record_offsets(data: bytes) -> list[int]:
    p = Parsed.parse(data)
    pos = len(p.prefix) + HEADER_FIELDS.size + 4
    out = []
    for r in p.records:
        out.append(pos)
        n = len(_enc_varint(len(r.z))) + len(r.z) + len(_enc_varint(len(r.y))) + len(r.y)
        pos += 1 + len(_enc_varint(n)) + 8 + n
    return out


# ---------------------------------------------------------------------------------------------- models, seeds
def load_models() -> dict[bytes, tuple[object, int]]:
    """{weights hash: (model, steps)}: the golden model at steps 0, the golden model + a tiny refiner at 1."""
    import torch

    from gnvc.models.model_dir import GnvcModel
    from gnvc.refiner import Refiner

    torch.set_num_threads(1)
    golden = GnvcModel.from_pretrained(GOLDEN / "model")
    prof = copy.deepcopy(golden.profile)
    prof["refiner"] = copy.deepcopy(TINY_REFINER)
    torch.manual_seed(0)
    refined = GnvcModel(prof, golden.vae, golden.codec, Refiner.from_config(prof["refiner"], seed=0)).eval()
    return {golden.weights_hash: (golden, 0), refined.weights_hash: (refined, 1)}


def restamp(data: bytes, weights_hash: bytes) -> bytes:
    """A valid stream re-labelled with another model's weights hash (same codec, so the latents match)."""
    pre = 6 + data[5]
    head = bytearray(data[: pre + 8 + HEADER_FIELDS.size])
    head[pre : pre + 8] = weights_hash
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + data[len(head) + 4 :]


def load_seeds(models: dict[bytes, tuple[object, int]]) -> dict[str, bytes]:
    """The golden streams and the short seeds of tests/data/fuzz/seeds, the small ones also re-stamped
    for the refiner model (name suffix ``.s1``)."""
    seeds = {}
    refiner_hash = next(h for h, (_, steps) in models.items() if steps == 1)
    for path in sorted(GOLDEN.glob("*.gnvc")) + sorted((FUZZ_DATA / "seeds").glob("*.gnvc")):
        data = path.read_bytes()
        seeds[path.stem] = data
        if not path.stem.startswith(("96x80", "128x96")):  # the refiner decodes the smaller seeds (time)
            seeds[path.stem + ".s1"] = restamp(data, refiner_hash)
    return seeds


SEED_CLIPS = [  # (width, height, frames, quality, intra period): cheap to decode, every record shape
    (16, 16, 1, 3, 0),
    (33, 17, 1, 0, 0),
    (24, 40, 5, 5, 0),
    (32, 16, 5, 2, 1),
    (16, 32, 9, 4, 2),
]


def make_cases(directory: Path) -> None:
    """Hand-made regression streams for the findings the mutator reaches only by chance."""
    seed = FUZZ_DATA / "seeds"
    ip1 = Parsed.parse((seed / "seed-32x16_f5_q2_ip1.gnvc").read_bytes())  # 5 segments of one I record
    chain = Parsed.parse((seed / "seed-24x40_f5_q5_ip0.gnvc").read_bytes())  # I, P
    directory.mkdir(parents=True, exist_ok=True)
    # A CRC-valid seek index whose entry for segment 2 is in order and inside the record area, but one
    # byte past segment 2's I record; and a byte slipped in between the last record and the index.
    entries = list(ip1.index)
    entries[2] = (entries[2][0], _record_offsets(ip1.pack())[2] + 1, entries[2][2])
    cases = {"gap-before-index": ip1.pack({"gap": b"\0"}), "forged-index-entry2": ip1.pack({"index": entries})}
    for name, (which, edit) in {
        "y-short-word": ("y", lambda s: s[:-4]),
        "y-trailing-word": ("y", lambda s: s + b"\0\0\0\0"),
        "z-not-words": ("z", lambda s: s[:-2]),
        "z-bypass-run": ("z", lambda s: b"\xff" * 64),
        "y-empty": ("y", lambda s: b""),
    }.items():
        p = copy.deepcopy(chain)
        rec = p.records[1]
        setattr(rec, which, edit(getattr(rec, which)))
        cases[name] = p.pack()
    for name, data in cases.items():
        (directory / f"{name}.gnvc").write_bytes(data)


def make_seeds(directory: Path) -> None:
    """Encode the short seed streams with the golden model (a deterministic pattern, panning)."""
    import numpy as np

    from gnvc.io.video import Video
    from gnvc.models.model_dir import GnvcModel
    from gnvc.videocodec import encode_video

    model = GnvcModel.from_pretrained(GOLDEN / "model")
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    for w, h, n, q, period in SEED_CLIPS:
        clip = np.stack([np.roll(base, 2 * t, axis=1)[:h, :w] for t in range(n)])
        data = encode_video(model, Video(clip, 25), q, seed=5, intra_period=period or None).data
        (directory / f"seed-{w}x{h}_f{n}_q{q}_ip{period}.gnvc").write_bytes(data)


# ---------------------------------------------------------------------------------------------- worker
def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _classify(models: dict, data: bytes) -> dict:
    from gnvc.errors import GnvcError
    from gnvc.videocodec import decode_stream

    plen = data[5] if len(data) > 5 else 0
    whash = data[6 + plen : 14 + plen]
    model, steps = models.get(whash) or next(v for v in models.values() if v[1] == 0)
    frames = [0]
    try:
        decode_stream(model, io.BytesIO(data), lambda f: frames.__setitem__(0, frames[0] + 1), steps=steps)
        return {"outcome": "ok", "steps": steps, "frames": frames[0]}
    except GnvcError as e:
        msg = str(e)
        if not msg.strip():
            return {"outcome": "exception", "steps": steps, "type": type(e).__name__, "message": "(empty message)"}
        return {"outcome": "gnvc", "steps": steps, "type": type(e).__name__, "message": msg}
    except MemoryError as e:
        return {"outcome": "oom", "steps": steps, "type": "MemoryError", "message": str(e)[:300]}
    except Exception as e:  # noqa: BLE001 — every other exception is a finding
        msg = str(e)
        kind = "oom" if re.search(r"alloc|out of memory|can't allocate", msg, re.I) else "exception"
        tb = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{Path(tb.filename).name}:{tb.lineno}"
        return {"outcome": kind, "steps": steps, "type": type(e).__name__, "message": f"{msg[:300]} ({where})"}


_COVERAGE = None  # started by main() before gnvc is imported; forked workers inherit the tracer


def _worker(conn_r: int, conn_w: int, models: dict, mem_limit: int, cov_file: str | None) -> None:
    """Decode streams sent by the parent until EOF; one JSON line back per stream."""
    cov = _COVERAGE
    if mem_limit:
        limit = _vm_bytes() + mem_limit
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rf = os.fdopen(conn_r, "rb")
    wf = os.fdopen(conn_w, "wb")
    while True:
        head = rf.read(4)
        if len(head) < 4:
            break
        (n,) = struct.unpack("<I", head)
        data = rf.read(n)
        res = _classify(models, data)
        wf.write(json.dumps(res).encode() + b"\n")
        wf.flush()
    if cov is not None:
        cov.stop()
        cov.save()
    os._exit(0)


class Worker:
    """A forked decoder process (models shared copy-on-write); respawned after a crash or a hang."""

    def __init__(self, models: dict, mem_limit: int, cov_file: str | None) -> None:
        self.models, self.mem_limit, self.cov_file = models, mem_limit, cov_file
        self.spawn()

    def spawn(self) -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(to_w)
            os.close(from_r)
            try:
                _worker(to_r, from_w, self.models, self.mem_limit, self.cov_file)
            finally:
                os._exit(70)
        os.close(to_r)
        os.close(from_w)
        self.pid, self.w, self.r = pid, os.fdopen(to_w, "wb"), from_r
        self.buf = b""

    def run(self, data: bytes, timeout: float) -> dict:
        t0 = time.perf_counter()
        try:
            self.w.write(struct.pack("<I", len(data)) + data)
            self.w.flush()
        except BrokenPipeError:
            return self._died(t0)
        while b"\n" not in self.buf:
            left = timeout - (time.perf_counter() - t0)
            ready, _, _ = select.select([self.r], [], [], max(0.0, left))
            if not ready:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self._close()
                self.spawn()
                return {"outcome": "hang", "message": f"no answer in {timeout:.0f} s", "seconds": timeout}
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                return self._died(t0)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        res = json.loads(line)
        res["seconds"] = time.perf_counter() - t0
        return res

    def _died(self, t0: float) -> dict:
        _, status = os.waitpid(self.pid, 0)
        self._close()
        self.spawn()
        if os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status)).name
            return {"outcome": "crash", "message": f"worker killed by {sig}", "seconds": time.perf_counter() - t0}
        code = os.WEXITSTATUS(status)
        return {"outcome": "crash", "message": f"worker exited with status {code}", "seconds": time.perf_counter() - t0}

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            self.w.close()
        os.close(self.r)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.w.close()
        os.waitpid(self.pid, 0)
        os.close(self.r)


# ---------------------------------------------------------------------------------------------- driver
def message_class(msg: str) -> str:
    """A message with its numbers and hex digests blanked: distinct classes, not distinct values."""
    return re.sub(r"\b(0x)?[0-9a-f]{8,}\b|-?\d+(\.\d+)?(e-?\d+)?", "#", msg)


@dataclass
class Report:
    runs: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    by_steps: Counter = field(default_factory=Counter)
    messages: Counter = field(default_factory=Counter)
    findings: list = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)
    op_outcomes: Counter = field(default_factory=Counter)
    time_by: Counter = field(default_factory=Counter)  # seconds spent per outcome
    files: dict = field(default_factory=dict)  # --replay: the outcome of every file
    fuzz_outcomes: Counter = field(default_factory=Counter)  # the mutations' outcomes alone, by steps


def save_case(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def fuzz(args: argparse.Namespace, models: dict, worker: Worker, rep: Report) -> None:
    """Mutations ``--start`` … of ``--seed`` (or ``--only``), until ``--runs`` or ``--max-seconds``."""
    mut = Mutator(load_seeds(models), args.seed)
    seen: set[tuple[str, str]] = set()
    t0 = last = time.perf_counter()
    todo = args.only if args.only else range(args.start, args.start + (args.runs or 0))
    for i in todo:
        op, desc, data = mut.mutate(i)
        res = worker.run(data, args.timeout)
        rep.ops[op] += 1
        rep.op_outcomes[f"{op}:{res['outcome']}"] += 1
        rep.fuzz_outcomes[f"steps{res.get('steps', '?')}:{res['outcome']}"] += 1
        note(rep, res, f"{args.seed}:{i}", desc, data, args, seen)
        now = time.perf_counter()
        if args.max_seconds and now - t0 > args.max_seconds:
            print(f"[fuzz] --max-seconds reached after {rep.runs} runs", file=sys.stderr)
            break
        if now - last > args.progress:
            last = now
            done = rep.runs
            print(f"[fuzz] {done} runs, {done / (now - t0):.1f}/s, {dict(rep.outcomes)}", file=sys.stderr, flush=True)
            if args.json:
                write_json(rep, args, now - t0, partial=True)


def note(rep: Report, res: dict, ident: str, desc: str, data: bytes, args: argparse.Namespace, seen: set) -> None:
    rep.runs += 1
    out = res["outcome"]
    rep.outcomes[out] += 1
    rep.time_by[out] += res.get("seconds", 0.0)
    if "steps" in res:
        rep.by_steps[f"steps{res['steps']}:{out}"] += 1
    cls = message_class(res.get("message", ""))
    if out != "ok":
        rep.messages[f"{res.get('type', out)}: {cls}"] += 1
    if out in FINDINGS:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ident)
        path = save_case(Path(args.crash_dir), f"{out}-{safe}.gnvc", data) if args.crash_dir else None
        rep.findings.append({"id": ident, "mutation": desc, **res, "file": str(path) if path else None})
        print(f"[fuzz] FINDING {out} {ident} {desc}: {res.get('type', '')} {res.get('message', '')}", file=sys.stderr)
    if args.corpus_dir and (out, cls) not in seen:
        seen.add((out, cls))
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{ident}-{desc}")[:90]
        save_case(Path(args.corpus_dir), f"{safe}.gnvc", data)


def replay(args: argparse.Namespace, worker: Worker, rep: Report) -> None:
    """Decode every ``--replay`` file (directories: every ``*.gnvc`` below them)."""
    files: list[Path] = []
    for p in map(Path, args.replay):
        files += sorted(p.rglob("*.gnvc")) if p.is_dir() else [p]
    for path in files:
        res = worker.run(path.read_bytes(), args.timeout)
        rep.files[str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)] = {
            k: res[k] for k in ("outcome", "type", "message", "steps", "frames") if k in res
        }
        note(rep, res, path.name, path.name, b"", argparse.Namespace(crash_dir=None, corpus_dir=None), set())
        if res["outcome"] in FINDINGS:
            rep.findings[-1]["file"] = str(path)
        if args.verbose:
            print(f"{path.name}: {res['outcome']} {res.get('message', '')}")


def write_json(rep: Report, args: argparse.Namespace, seconds: float, partial: bool = False) -> None:
    out = {
        "engine": "builtin",
        "seed": args.seed,
        "start": args.start,
        "runs": rep.runs,
        "partial": partial,
        "seconds": round(seconds, 1),
        "exec_per_s": round(rep.runs / seconds, 2) if seconds else None,
        "timeout_s": args.timeout,
        "mem_limit_mb": args.mem_limit_mb,
        "outcomes": dict(rep.outcomes),
        "by_steps": dict(rep.by_steps),
        "fuzz_runs": sum(rep.fuzz_outcomes.values()),
        "fuzz_outcomes": dict(rep.fuzz_outcomes),
        "mutations": dict(rep.ops.most_common()),
        "mutation_outcomes": dict(sorted(rep.op_outcomes.items())),
        "seconds_by_outcome": {k: round(v, 1) for k, v in rep.time_by.items()},
        "distinct_messages": len(rep.messages),
        "messages": dict(rep.messages.most_common()),
        "findings": rep.findings[:200],
        "replay": args.replay or None,
        "files": rep.files or None,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)


def print_table(rep: Report) -> None:
    print(f"{rep.runs} streams in {rep.seconds:.1f} s ({rep.runs / max(rep.seconds, 1e-9):.1f}/s)")
    print(f"{'outcome':<12}{'count':>10}")
    for k in ("ok", "gnvc", *FINDINGS):
        print(f"{k:<12}{rep.outcomes.get(k, 0):>10}")
    print(f"distinct GnvcError/exception message classes: {len(rep.messages)}")
    for msg, n in rep.messages.most_common(12):
        print(f"{n:>8}  {msg[:110]}")


def coverage_report(cov_file: str) -> dict:
    import coverage

    cov = coverage.Coverage(data_file=cov_file)
    cov.combine()
    cov.save()
    out = {}
    total_s = total_m = 0
    for rel in DECODE_PATH:
        path = str(ROOT / rel)
        try:
            _, statements, _, missing, _ = cov.analysis2(path)
        except coverage.CoverageException:
            continue
        out[rel] = {"statements": len(statements), "missing": len(missing),
                    "percent": round(100 * (1 - len(missing) / max(1, len(statements))), 1)}  # fmt: skip
        total_s += len(statements)
        total_m += len(missing)
    out["total"] = {
        "statements": total_s,
        "missing": total_m,
        "percent": round(100 * (1 - total_m / max(1, total_s)), 1),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=None, help="mutations to run (default 1000; 0 with --replay)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first mutation index (resume a campaign)")
    ap.add_argument("--only", type=int, nargs="*", help="replay these mutation indices of --seed")
    ap.add_argument("--engine", choices=["builtin"], default="builtin")
    ap.add_argument("--max-seconds", type=float, default=0.0, help="stop after this long (0: after --runs)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per stream before it counts as a hang")
    ap.add_argument("--mem-limit-mb", type=int, default=2048, help="address space a worker may add (0: none)")
    ap.add_argument("--replay", nargs="*", help="decode these files/directories instead of fuzzing")
    ap.add_argument("--crash-dir", default=str(ROOT / "bench" / "results" / "fuzz_findings"))
    ap.add_argument("--corpus-dir", default=None, help="save the first stream of every new outcome class here")
    ap.add_argument("--coverage", action="store_true", help="line coverage of the decode path (coverage.py)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "fuzz_decoder.json"))
    ap.add_argument("--progress", type=float, default=60.0, help="seconds between progress lines")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--make-seeds", action="store_true", help="(re)write tests/data/fuzz/{seeds,cases} and exit")
    args = ap.parse_args(argv)
    if args.make_seeds:
        make_seeds(FUZZ_DATA / "seeds")
        make_cases(FUZZ_DATA / "cases")
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.cov_file = None
    if args.coverage:
        import tempfile

        import coverage

        global _COVERAGE
        args.cov_file = str(Path(tempfile.mkdtemp(prefix="gnvc-fuzz-cov-")) / ".coverage")
        include = [str(ROOT / p) for p in DECODE_PATH]
        _COVERAGE = coverage.Coverage(data_file=args.cov_file, data_suffix=True, include=include)
        _COVERAGE.start()  # before gnvc is imported, so that definitions count as run
    models = load_models()
    worker = Worker(models, args.mem_limit_mb << 20, args.cov_file)
    rep = Report()
    t0 = time.perf_counter()
    try:
        if args.replay:
            replay(args, worker, rep)
        if not args.replay or args.runs:  # --replay with --runs: the stored cases, then a fuzzing slice
            args.runs = 1000 if args.runs is None else args.runs
            fuzz(args, models, worker, rep)
    finally:
        worker.close()
    rep.seconds = time.perf_counter() - t0
    if _COVERAGE is not None:
        _COVERAGE.stop()
        _COVERAGE.save()
    print_table(rep)
    if args.cov_file:
        cov = coverage_report(args.cov_file)
        print(json.dumps(cov, indent=1))
        rep_cov = cov
    else:
        rep_cov = None
    if args.json:
        write_json(rep, args, rep.seconds)
        if rep_cov:
            data = json.loads(Path(args.json).read_text())
            data["coverage"] = rep_cov
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 1 if any(rep.outcomes.get(k) for k in FINDINGS) else 0


if __name__ == "__main__":
    sys.exit(main())
