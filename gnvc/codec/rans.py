"""A bounds-checked decoder for CompressAI's rANS streams (``compressai.ans``, 16-bit precision).

CompressAI's C++ ``RansDecoder.decode_with_indexes`` trusts its input: it reads one 32-bit word
whenever the state needs one, without knowing where the stream ends. A stream shorter than its
symbols — a header that declares a larger frame than was coded, a truncated or forged payload —
makes it read past the end of the buffer (a segfault when that crosses into unmapped memory), and
with the bypass escape (``n_bypass`` grows with every 0xF nibble it reads) the over-read is not
bounded by the number of symbols. This module decodes the same format, symbol for symbol (the
Rans64 arithmetic of ``rans_interface.cpp``, whose 64-bit operations never overflow, so Python's
integers reproduce them exactly), and proves that the stream is well formed instead of trusting it:

- the stream is a whole number of 32-bit words, at least the 2 words of the initial state;
- no refill ever reads past the last word ("the stream ends before its N symbols do");
- a bypass value has at most 8 nibbles and fits in int32 (what CompressAI's encoder can write);
- after the last symbol every word has been read and the state is back at the encoder's initial
  ``RANS64_L`` — rANS decoding runs the encoder backwards, so any valid stream ends exactly there,
  and trailing or missing bytes do not.

Costs about 1 µs per symbol (4× the C++ decoder, which is a small part of a decode: the integer
loop and the VAE dominate). Encoding stays with CompressAI's C++ encoder.
"""

from __future__ import annotations

import struct
from bisect import bisect_right

from gnvc.errors import BitstreamError

PRECISION = 16
MASK = (1 << PRECISION) - 1
RANS64_L = 1 << 31
BYPASS_BITS = 4
BYPASS_MAX = (1 << BYPASS_BITS) - 1
MAX_BYPASS_NIBBLES = 8  # CompressAI codes an int32 raw value, so at most 8 nibbles


def rans_decode(
    data: bytes, indexes: list[int], cdfs: list[list[int]], cdf_lengths: list[int], offsets: list[int], what: str
) -> list[int]:
    """Symbols of ``data`` for the CDF ``indexes`` (CompressAI's ``decode_with_indexes``), checked.

    ``cdfs``/``cdf_lengths``/``offsets`` are an entropy model's shipped tables; ``what`` names the
    stream in error messages. Raises :class:`BitstreamError` for any stream the encoder cannot
    have written.
    """
    n = len(indexes)
    if len(data) % 4 or len(data) < 8:
        raise BitstreamError(
            f"corrupt bitstream: {what} is {len(data)} bytes, not a rANS stream (a whole number of "
            "32-bit words, at least 2)"
        )
    end = len(data) // 4
    words = struct.unpack(f"<{end}I", data)  # little-endian words, as CompressAI writes them on x86 and ARM
    tables = [c[:k] for c, k in zip(cdfs, cdf_lengths)]
    x = words[0] | (words[1] << 32)
    p = 2
    out = [0] * n

    def short() -> BitstreamError:
        return BitstreamError(f"corrupt bitstream: {what} ends before its {n} symbols do")

    for i, ci in enumerate(indexes):
        cdf = tables[ci]
        cum = x & MASK
        s = bisect_right(cdf, cum) - 1
        start = cdf[s]
        x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
        if x < RANS64_L:
            if p >= end:
                raise short()
            x = (x << 32) | words[p]
            p += 1
        max_value = len(cdf) - 2
        if s == max_value:  # bypass escape: a nibble count (0xF continues it), then the raw nibbles
            count = 0
            while True:
                v = x & BYPASS_MAX
                x >>= BYPASS_BITS
                if x < RANS64_L:
                    if p >= end:
                        raise short()
                    x = (x << 32) | words[p]
                    p += 1
                count += v
                if count > MAX_BYPASS_NIBBLES:
                    raise BitstreamError(f"corrupt bitstream: {what} has a bypass value of {count} nibbles")
                if v != BYPASS_MAX:
                    break
            raw = 0
            for j in range(count):
                v = x & BYPASS_MAX
                x >>= BYPASS_BITS
                if x < RANS64_L:
                    if p >= end:
                        raise short()
                    x = (x << 32) | words[p]
                    p += 1
                raw |= v << (BYPASS_BITS * j)
            if raw >= 1 << 31:
                raise BitstreamError(f"corrupt bitstream: {what} has a bypass value outside int32")
            s = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + max_value
        out[i] = s + offsets[ci]
    if p != end or x != RANS64_L:
        raise BitstreamError(
            f"corrupt bitstream: {what} does not end where its {n} symbols do "
            f"({end - p} unread words, final state {'valid' if x == RANS64_L else 'invalid'})"
        )
    return out
