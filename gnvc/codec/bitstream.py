"""The ``.gnvc`` container: a versioned header and per-group payloads with lengths and CRCs.

Layout (little-endian)::

    magic "GNVC" | version u8 | profile: u8 length + ASCII | weights hash 8B
    width u16 | height u16 | frames u32 | fps num u32 | fps den u32 | gop frames u8
    quality u8 | t_N f32 | steps u8 | noise seed u32 | header CRC32 u32
    per group:  payload length (LEB128) | CRC32 of the rest u32 | reconstruction CRC32 u32 | payload
    payload:    per latent frame, per stream (z, y): length (LEB128) | bytes

Groups are derived from ``frames`` and ``gop frames`` (the last one may be shorter), so the
header stays ~50 bytes. The payload CRC catches corruption before any byte reaches the entropy
decoder; the reconstruction CRC (of the decoded latents, float32) proves the decoder reproduced
the encoder's latents bit-exactly, and turns any mismatch into an error instead of garbage.
Every length is checked against the bytes that remain before anything is allocated.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

from gnvc.errors import BitstreamError
from gnvc.models.vae import latent_frames, padded_frames

MAGIC = b"GNVC"
VERSION = 1
MAX_SIDE = 16384
MAX_FRAMES = 10_000_000
MAX_STEPS = 1000
_HEAD = struct.Struct("<HHIIIBBfBI")


@dataclass
class Header:
    profile: str
    weights_hash: bytes
    width: int
    height: int
    frames: int
    fps_num: int
    fps_den: int
    gop_frames: int
    quality: int
    t_n: float
    steps: int
    seed: int

    @property
    def num_groups(self) -> int:
        return math.ceil(self.frames / self.gop_frames)

    def group_frames(self, index: int) -> int:
        """Pixel frames in group ``index`` (the last group may be shorter)."""
        return min(self.gop_frames, self.frames - index * self.gop_frames)


@dataclass
class Group:
    streams: list[list[bytes]]  # per latent frame [z, y]
    recon_crc: int

    def payload(self) -> bytes:
        out = bytearray()
        for frame in self.streams:
            for s in frame:
                out += encode_varint(len(s)) + s
        return bytes(out)


@dataclass
class Bitstream:
    header: Header
    groups: list[Group] = field(default_factory=list)


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BitstreamError(
                f"truncated bitstream: {what} needs {n} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} remain"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        n, shift = 0, 0
        while True:
            b = self.take(1, what)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 35:
                raise BitstreamError(f"corrupt bitstream: {what} length field is too long at offset {self.pos}")


def write_bitstream(bs: Bitstream) -> bytes:
    h = bs.header
    prof = h.profile.encode("ascii")
    head = bytearray(MAGIC + bytes([VERSION, len(prof)]) + prof + h.weights_hash)
    head += _HEAD.pack(
        h.width, h.height, h.frames, h.fps_num, h.fps_den, h.gop_frames, h.quality, h.t_n, h.steps, h.seed
    )
    head += struct.pack("<I", zlib.crc32(head))
    out = bytearray(head)
    if len(bs.groups) != h.num_groups:
        raise ValueError(f"{len(bs.groups)} groups for a header that implies {h.num_groups}")
    for g in bs.groups:
        payload = g.payload()
        recon = struct.pack("<I", g.recon_crc)
        out += encode_varint(len(payload)) + struct.pack("<I", zlib.crc32(recon + payload)) + recon + payload
    return bytes(out)


def read_header(data: bytes) -> tuple[Header, int]:
    """Parse and validate the header; returns it and the offset of the first group."""
    r = _Reader(data)
    if r.take(min(4, len(data)), "magic") != MAGIC:
        raise BitstreamError("not a gnvc bitstream (bad magic; expected a .gnvc file)")
    version = r.take(1, "version")[0]
    if version != VERSION:
        raise BitstreamError(f"unsupported bitstream version {version} (this gnvc reads version {VERSION})")
    plen = r.take(1, "profile length")[0]
    prof_bytes = r.take(plen, "profile")
    whash = r.take(8, "weights hash")
    fields = _HEAD.unpack(r.take(_HEAD.size, "header"))
    (crc,) = struct.unpack("<I", r.take(4, "header CRC"))
    if zlib.crc32(data[: r.pos - 4]) != crc:
        raise BitstreamError("corrupt bitstream: header CRC mismatch")
    try:
        profile = prof_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt bitstream: profile name is not ASCII") from None
    width, height, frames, fps_num, fps_den, gop, quality, t_n, steps, seed = fields
    h = Header(profile, whash, width, height, frames, fps_num, fps_den, gop, quality, t_n, steps, seed)
    problems = []
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        problems.append(f"size {width}x{height}")
    if not 1 <= frames <= MAX_FRAMES:
        problems.append(f"{frames} frames")
    if fps_num == 0 or fps_den == 0:
        problems.append(f"frame rate {fps_num}/{fps_den}")
    if gop < 1 or (gop - 1) % 4:
        problems.append(f"group of {gop} frames")
    if not (0.0 <= t_n <= 1.0) or steps > MAX_STEPS:
        problems.append(f"refinement t_N={t_n}, steps={steps}")
    if problems:
        raise BitstreamError(f"invalid bitstream header: {', '.join(problems)}")
    return h, r.pos


def read_bitstream(data: bytes) -> Bitstream:
    """Parse a whole file; raises :class:`BitstreamError` on any inconsistency, never crashes."""
    header, pos = read_header(data)
    r = _Reader(data)
    r.pos = pos
    groups = []
    for gi in range(header.num_groups):
        n = r.varint(f"group {gi} length")
        payload_crc, recon_crc = struct.unpack("<II", r.take(8, f"group {gi} CRCs"))
        payload = r.take(n, f"group {gi} payload")
        if zlib.crc32(struct.pack("<I", recon_crc) + payload) != payload_crc:
            raise BitstreamError(f"corrupt bitstream: group {gi} payload CRC mismatch")
        pr = _Reader(payload)
        streams = []
        for t in range(latent_frames(padded_frames(header.group_frames(gi)))):
            streams.append([pr.take(pr.varint(f"group {gi} frame {t} {k}"), f"group {gi} frame {t} {k}") for k in "zy"])
        if pr.pos != len(payload):
            raise BitstreamError(f"corrupt bitstream: group {gi} has {len(payload) - pr.pos} unexplained bytes")
        groups.append(Group(streams, recon_crc))
    if r.pos != len(data):
        raise BitstreamError(f"corrupt bitstream: {len(data) - r.pos} trailing bytes after the last group")
    return Bitstream(header, groups)
