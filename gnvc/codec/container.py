"""The ``.gnvc`` container, version 2: header, one record per latent frame, seek index, footer.

Layout (little-endian; LEB128 = unsigned varint; docs/bitstream.md is the full specification)::

    header   magic "GNVC" | version u8 = 2 | profile u8 length + ASCII | weights hash 8B
             width u16 | height u16 | frames u32 | fps num u32 | fps den u32 | quality u8
             t_N f32 | steps u8 | noise seed u32 | intra period u32 | header CRC32 u32
    records  per latent frame: type u8 ('I' or 'P') | payload length LEB128 | latent CRC32 u32
             | payload CRC32 u32 (over the latent CRC and the payload) | payload
    payload  z length LEB128 | z bytes | y length LEB128 | y bytes
    index    "GIDX" | count LEB128 | per segment: first latent LEB128, record offset LEB128,
             first frame LEB128 | index CRC32 u32
    footer   index offset u64 | "GEND"

A video is one P-chain per *segment*: a segment starts with an I-latent that stands for one
pixel frame, and every following latent stands for four (the causal VAE's 1 + 4k structure).
``intra period`` is the number of latent frames per segment (0: the whole video is one segment).
The segment structure follows from ``frames`` and ``intra period`` alone, so the header stays
small and the index can be checked against it. The latent CRC is a CRC32 of the decoder's
integer latent (int32, little-endian, C order): it proves the decoder reproduced the encoder's
latents bit-exactly and turns any mismatch into an error instead of garbage.

Readers and writers stream: the writer appends records and writes the index at the end (patching
the frame count into the header when the input's length was unknown), the reader pulls one record
at a time, and a seek reads the footer and the index only. Every length is checked against the
bytes that remain before anything is allocated.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from gnvc.errors import BitstreamError

MAGIC = b"GNVC"
VERSION = 2
INDEX_MAGIC = b"GIDX"
FOOTER_MAGIC = b"GEND"
FOOTER = struct.Struct("<Q4s")
MAX_SIDE = 16384
MAX_FRAMES = 10_000_000
MAX_STEPS = 255
MAX_RECORD = 1 << 30
TEMPORAL_FACTOR = 4  # pixel frames per latent frame after a segment's first
INTRA, INTER = ord("I"), ord("P")
_FIELDS = struct.Struct("<HHIIIBfBII")


@dataclass
class Header:
    profile: str
    weights_hash: bytes
    width: int
    height: int
    frames: int
    fps_num: int
    fps_den: int
    quality: int
    t_n: float
    steps: int
    seed: int
    intra_period: int = 0  # latent frames per segment; 0: one segment

    @property
    def segment_frames(self) -> int:
        """Pixel frames per full segment."""
        if not self.intra_period:
            return max(1, self.frames)
        return 1 + TEMPORAL_FACTOR * (self.intra_period - 1)

    @property
    def num_segments(self) -> int:
        return math.ceil(self.frames / self.segment_frames)

    def segment_of_frame(self, frame: int) -> int:
        return frame // self.segment_frames

    def segment_pixel_frames(self, s: int) -> int:
        return min(self.segment_frames, self.frames - s * self.segment_frames)

    def segment_latents(self, s: int) -> int:
        """Latent frames of segment ``s``: 1 + ceil((frames − 1)/4) (the last chunk padded)."""
        return 1 + math.ceil((self.segment_pixel_frames(s) - 1) / TEMPORAL_FACTOR)

    def first_latent(self, s: int) -> int:
        return s * self.intra_period if self.intra_period else 0

    @property
    def num_latents(self) -> int:
        n = self.num_segments
        return self.first_latent(n - 1) + self.segment_latents(n - 1)

    def pack(self) -> bytes:
        prof = self.profile.encode("ascii")
        if len(prof) > 255 or len(self.weights_hash) != 8:
            raise ValueError("profile name ≤ 255 ASCII bytes and an 8-byte weights hash")
        head = bytearray(MAGIC + bytes([VERSION, len(prof)]) + prof + self.weights_hash)
        head += _FIELDS.pack(
            self.width, self.height, self.frames, self.fps_num, self.fps_den, self.quality,
            self.t_n, self.steps, self.seed, self.intra_period,
        )  # fmt: skip
        return bytes(head + struct.pack("<I", zlib.crc32(head)))


@dataclass(frozen=True)
class IndexEntry:
    first_latent: int
    offset: int  # of the segment's I record, from the start of the file
    first_frame: int


@dataclass
class Record:
    latent: int  # index of the latent frame in the video
    kind: int  # INTRA or INTER
    latent_crc: int
    streams: list[bytes]  # [z, y]


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Source:
    """Exact reads from a seekable binary file, with errors that say what was being read."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size

    @property
    def pos(self) -> int:
        return self.f.tell()

    def take(self, n: int, what: str) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.size:
            raise BitstreamError(
                f"truncated bitstream: {what} needs {n} bytes at offset {pos}, only {self.size - pos} remain"
            )
        return self.f.read(n)

    def varint(self, what: str, limit: int = 1 << 62) -> int:
        n, shift = 0, 0
        while True:
            b = self.take(1, what)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise BitstreamError(f"corrupt bitstream: {what} field is too long at offset {self.pos}")
        if n > limit:
            raise BitstreamError(f"corrupt bitstream: {what} = {n} exceeds {limit} at offset {self.pos}")
        return n


def _parse_header(src: _Source) -> Header:
    magic = src.take(min(4, src.size), "magic")
    if magic != MAGIC:
        raise BitstreamError("not a gnvc bitstream (bad magic; expected a .gnvc file)")
    version = src.take(1, "version")[0]
    if version == 1:
        raise BitstreamError(
            "format version 1 is no longer supported; re-encode the video with this gnvc (format version 2)"
        )
    if version != VERSION:
        raise BitstreamError(f"unsupported bitstream version {version} (this gnvc reads version {VERSION})")
    plen = src.take(1, "profile length")[0]
    prof = src.take(plen, "profile")
    whash = src.take(8, "weights hash")
    fields = _FIELDS.unpack(src.take(_FIELDS.size, "header"))
    end = src.pos
    (crc,) = struct.unpack("<I", src.take(4, "header CRC"))
    src.f.seek(0)
    if zlib.crc32(src.f.read(end)) != crc:
        raise BitstreamError("corrupt bitstream: header CRC mismatch")
    src.f.seek(end + 4)
    try:
        profile = prof.decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt bitstream: profile name is not ASCII") from None
    width, height, frames, fps_num, fps_den, quality, t_n, steps, seed, intra = fields
    h = Header(profile, whash, width, height, frames, fps_num, fps_den, quality, t_n, steps, seed, intra)
    problems = []
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        problems.append(f"size {width}x{height}")
    if not 1 <= frames <= MAX_FRAMES:
        problems.append(f"{frames} frames")
    if fps_num == 0 or fps_den == 0:
        problems.append(f"frame rate {fps_num}/{fps_den}")
    if not (0.0 < t_n < 1.0) or steps > MAX_STEPS:
        problems.append(f"refinement t_N={t_n}, steps={steps}")
    if intra > MAX_FRAMES:
        problems.append(f"intra period {intra}")
    if problems:
        raise BitstreamError(f"invalid bitstream header: {', '.join(problems)}")
    return h


class ContainerReader:
    """Reads a ``.gnvc`` file record by record (memory: one record), or from a seek-index entry."""

    def __init__(self, f: BinaryIO) -> None:
        f.seek(0, io.SEEK_END)
        self._src = _Source(f, f.tell())
        f.seek(0)
        self.header = _parse_header(self._src)
        self.records_start = self._src.pos
        self._index: list[IndexEntry] | None = None
        self._index_offset = 0  # where the seek index starts (the records end), once read

    # ------------------------------------------------------------------ index
    def index(self) -> list[IndexEntry]:
        """The seek index (from the footer), checked against the header's segment structure."""
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> list[IndexEntry]:
        src, h = self._src, self.header
        if src.size < self.records_start + FOOTER.size:
            raise BitstreamError("truncated bitstream: no seek index footer")
        src.f.seek(src.size - FOOTER.size)
        offset, magic = FOOTER.unpack(src.f.read(FOOTER.size))
        if magic != FOOTER_MAGIC:
            raise BitstreamError("truncated or corrupt bitstream: the footer is missing")
        if not self.records_start <= offset <= src.size - FOOTER.size - len(INDEX_MAGIC):
            raise BitstreamError(f"corrupt bitstream: the seek index offset {offset} points outside the file")
        src.f.seek(offset)
        if src.take(4, "index magic") != INDEX_MAGIC:
            raise BitstreamError(f"corrupt bitstream: no seek index at offset {offset}")
        count = src.varint("index count", h.num_segments)
        if count != h.num_segments:
            raise BitstreamError(f"corrupt bitstream: the seek index has {count} entries, expected {h.num_segments}")
        entries = []
        for s in range(count):
            e = IndexEntry(src.varint("index latent"), src.varint("index offset"), src.varint("index frame"))
            expected = (h.first_latent(s), s * h.segment_frames)
            if (e.first_latent, e.first_frame) != expected or not self.records_start <= e.offset < offset:
                raise BitstreamError(f"corrupt bitstream: seek index entry {s} points outside the file or segment")
            if entries and e.offset <= entries[-1].offset:
                raise BitstreamError(f"corrupt bitstream: seek index entry {s} is out of order")
            entries.append(e)
        end = src.pos
        (crc,) = struct.unpack("<I", src.take(4, "index CRC"))
        src.f.seek(offset)
        if zlib.crc32(src.f.read(end - offset)) != crc:
            raise BitstreamError("corrupt bitstream: seek index CRC mismatch")
        if src.pos + 4 + FOOTER.size != src.size:
            raise BitstreamError("corrupt bitstream: unexplained bytes after the seek index")
        self._index_offset = offset
        return entries

    # ------------------------------------------------------------------ records
    def records(self, segment: int = 0) -> Iterator[Record]:
        """Records from the start of ``segment`` to the end (a non-zero segment seeks via the index).

        The seek index is read first and the records are checked against it as they come: every
        segment's I record must start exactly at its index entry, and the last record must end
        exactly where the index begins, so a CRC-valid index that lies about a segment, or bytes
        slipped in before the index, are errors rather than silently skipped or decoded.
        """
        h = self.header
        if not 0 <= segment < h.num_segments:
            raise BitstreamError(f"segment {segment} is outside the stream's 0..{h.num_segments - 1}")
        index = self.index()
        src = _Source(self._src.f, self._index_offset)  # records may not run into the index
        src.f.seek(index[segment].offset if segment else self.records_start)
        for s in range(segment, h.num_segments):
            if src.pos != index[s].offset:
                raise BitstreamError(
                    f"corrupt bitstream: the seek index puts segment {s} at offset {index[s].offset}, "
                    f"its I record is at {src.pos}"
                )
            for k in range(h.segment_latents(s)):
                record = self._read_record(src, h.first_latent(s) + k, INTRA if k == 0 else INTER)
                # Checked before the last record is handed out: a decoder stops pulling once it has it.
                if record.latent == h.num_latents - 1 and src.pos != self._index_offset:
                    raise BitstreamError(
                        f"corrupt bitstream: {self._index_offset - src.pos} unexplained bytes between the last "
                        "record and the seek index"
                    )
                yield record

    @staticmethod
    def _read_record(src: _Source, t: int, kind: int) -> Record:
        got = src.take(1, f"latent frame {t} type")[0]
        if got != kind:
            raise BitstreamError(f"corrupt bitstream: latent frame {t} is of type {got:#04x}, expected {chr(kind)!r}")
        n = src.varint(f"latent frame {t} length", MAX_RECORD)
        latent_crc, payload_crc = struct.unpack("<II", src.take(8, f"latent frame {t} CRCs"))
        payload = src.take(n, f"latent frame {t} payload")
        if zlib.crc32(struct.pack("<I", latent_crc) + payload) != payload_crc:
            raise BitstreamError(f"corrupt bitstream: latent frame {t} payload CRC mismatch")
        pr = _Source(io.BytesIO(payload), len(payload))
        streams = [pr.take(pr.varint(f"latent frame {t} {k} length"), f"latent frame {t} {k}") for k in "zy"]
        if pr.pos != len(payload):
            raise BitstreamError(f"corrupt bitstream: latent frame {t} has {len(payload) - pr.pos} unexplained bytes")
        return Record(t, kind, latent_crc, streams)


class ContainerWriter:
    """Appends records to a seekable binary file; ``close()`` writes the index and the footer."""

    def __init__(self, f: BinaryIO, header: Header) -> None:
        self.f, self.header = f, header
        self._start = f.tell()
        f.write(header.pack())
        self._index: list[IndexEntry] = []
        self._latent = 0
        self._segment_frame = 0

    def write_record(self, kind: int, latent_crc: int, streams: list[bytes], first_frame: int | None = None) -> None:
        """Append latent frame ``kind`` ('I' starts a segment; give its first pixel frame)."""
        if kind == INTRA:
            self._index.append(IndexEntry(self._latent, self.f.tell() - self._start, int(first_frame or 0)))
        payload = b"".join(encode_varint(len(s)) + s for s in streams)
        crc = struct.pack("<I", latent_crc)
        self.f.write(bytes([kind]) + encode_varint(len(payload)) + crc)
        self.f.write(struct.pack("<I", zlib.crc32(crc + payload)) + payload)
        self._latent += 1

    def close(self, frames: int | None = None) -> None:
        """Write the index and footer; ``frames`` patches the header's frame count (unknown inputs)."""
        if frames is not None and frames != self.header.frames:
            end = self.f.tell()
            self.header.frames = int(frames)
            self.f.seek(self._start)
            self.f.write(self.header.pack())
            self.f.seek(end)
        h = self.header
        if self._latent != h.num_latents or len(self._index) != h.num_segments:
            raise ValueError(f"{self._latent} latent frames written, the header implies {h.num_latents}")
        offset = self.f.tell() - self._start
        body = bytearray(INDEX_MAGIC + encode_varint(len(self._index)))
        for e in self._index:
            body += encode_varint(e.first_latent) + encode_varint(e.offset) + encode_varint(e.first_frame)
        self.f.write(bytes(body) + struct.pack("<I", zlib.crc32(body)) + FOOTER.pack(offset, FOOTER_MAGIC))


def read_header_bytes(data: bytes) -> Header:
    """The header of an in-memory stream."""
    return ContainerReader(io.BytesIO(data)).header


def read_stream(data: bytes) -> tuple[Header, list[Record], list[IndexEntry]]:
    """Parse a whole in-memory stream, checking every record, the seek index and the footer."""
    reader = ContainerReader(io.BytesIO(data))
    records = list(reader.records())
    return reader.header, records, reader.index()
