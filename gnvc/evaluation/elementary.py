"""Elementary-stream surgery: Annex B NAL units (H.264/HEVC/VVC) and AV1 OBUs.

Rates are counted on the raw elementary stream, never a container. Two operations need to look
inside it: removing x264's encoder-information SEI (a ~0.6 KB text dump of its settings that no
decoder needs, which on small clips dominates the lowest rates) and splitting an AV1 OBU stream
into temporal units so it can be fed to the decoder packet by packet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gnvc.errors import GnvcError

_START = re.compile(b"\x00\x00\x01")


@dataclass(frozen=True)
class NalUnit:
    start: int  # first byte of the start code (a 4-byte code's leading zero included)
    payload: int  # first byte of the NAL header
    end: int  # one past the last byte (next unit's start)

    def data(self, stream: bytes) -> bytes:
        return stream[self.payload : self.end]


def split_annexb(stream: bytes) -> list[NalUnit]:
    """NAL units of an Annex B byte stream (start codes cannot occur inside a unit)."""
    positions = [m.start() for m in _START.finditer(stream)]
    starts = [p - 1 if p > 0 and stream[p - 1] == 0 else p for p in positions]
    return [
        NalUnit(s, p + 3, starts[i + 1] if i + 1 < len(starts) else len(stream))
        for i, (s, p) in enumerate(zip(starts, positions))
    ]


def nal_type(unit: bytes, codec: str) -> int:
    """``nal_unit_type`` of a unit starting at its header."""
    if codec == "h264":
        return unit[0] & 0x1F
    if codec == "hevc":
        return (unit[0] >> 1) & 0x3F
    if codec == "vvc":
        return unit[1] >> 3
    raise ValueError(codec)


_SEI_TYPES = {"h264": (6,), "hevc": (39, 40), "vvc": (23, 24)}
_HEADER_BYTES = {"h264": 1, "hevc": 2, "vvc": 2}
USER_DATA_UNREGISTERED = 5


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 → 00 00)."""
    return re.sub(b"\x00\x00\x03", b"\x00\x00", data)


def _sei_messages(rbsp: bytes) -> list[tuple[int, bytes]] | None:
    """(payloadType, payload) of each SEI message, or None if the RBSP does not parse cleanly."""
    messages, i = [], 0
    while i < len(rbsp) and rbsp[i:] != b"\x80":
        values = []
        for _ in range(2):  # payloadType then payloadSize, each a run of 0xFF plus a last byte
            v = 0
            while i < len(rbsp) and rbsp[i] == 0xFF:
                v, i = v + 255, i + 1
            if i >= len(rbsp):
                return None
            values.append(v + rbsp[i])
            i += 1
        ptype, size = values
        if i + size > len(rbsp):
            return None
        messages.append((ptype, rbsp[i : i + size]))
        i += size
    return messages


def is_encoder_info_sei(unit: bytes, codec: str, markers: tuple[bytes, ...] = (b"x264 - core", b"x265 (build")) -> bool:
    """True for a SEI NAL unit holding only user-data-unregistered messages with an encoder banner."""
    if nal_type(unit, codec) not in _SEI_TYPES[codec]:
        return False
    messages = _sei_messages(unescape_rbsp(unit[_HEADER_BYTES[codec] :]))
    return bool(messages) and all(
        t == USER_DATA_UNREGISTERED and any(m in payload for m in markers) for t, payload in messages
    )


def strip_encoder_info(stream: bytes, codec: str) -> tuple[bytes, int]:
    """The stream without encoder-information SEI units, and how many bytes were removed."""
    units = split_annexb(stream)
    if not units:
        return stream, 0
    kept, removed = [stream[: units[0].start]], 0
    for u in units:
        if is_encoder_info_sei(u.data(stream), codec):
            removed += u.end - u.start
        else:
            kept.append(stream[u.start : u.end])
    return b"".join(kept), removed


def _leb128(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    for k in range(8):
        if i >= len(data):
            raise GnvcError("truncated AV1 OBU size field")
        b = data[i]
        value |= (b & 0x7F) << (7 * k)
        i += 1
        if not b & 0x80:
            return value, i
    raise GnvcError("invalid AV1 leb128 size field")


OBU_TEMPORAL_DELIMITER = 2


def split_obu_temporal_units(stream: bytes) -> list[bytes]:
    """Temporal units of a low-overhead (Section 5) AV1 OBU stream; each starts with a delimiter."""
    units: list[bytes] = []
    start, i = 0, 0
    while i < len(stream):
        header = stream[i]
        obu_type = (header >> 3) & 0x0F
        has_ext, has_size = (header >> 2) & 1, (header >> 1) & 1
        if not has_size:
            raise GnvcError("AV1 OBU without a size field: not a low-overhead OBU stream")
        size, j = _leb128(stream, i + 1 + has_ext)
        if obu_type == OBU_TEMPORAL_DELIMITER and i > start:
            units.append(stream[start:i])
            start = i
        i = j + size
    if i != len(stream):
        raise GnvcError("truncated AV1 OBU stream")
    if start < len(stream):
        units.append(stream[start:])
    return units
