"""What fuzzing the decoder found stays fixed (bench/fuzz_decoder.py, tests/data/fuzz/README.md).

The stored streams and a short slice of the builtin mutator run through the fuzzer's own forked
decoder worker (a subprocess with a time and an address-space limit), so a segfault in the entropy
decoder fails a test instead of killing pytest. The rANS decoder that replaced CompressAI's on the
decode path is also checked directly against CompressAI's encoder and decoder.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import GaussianConditional

from gnvc.codec.container import Header
from gnvc.codec.rans import rans_decode
from gnvc.errors import BitstreamError, InputError
from gnvc.videocodec.decoder import out_of_memory_as_input_error

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "tests" / "data" / "fuzz"
FINDINGS = ("exception", "oom", "crash", "hang")
# What each stored failure must say (a substring of its BitstreamError); seeds must decode.
EXPECTED = {
    "segv-huge-1024x4096": "the z stream ends before its 2048 symbols do",
    "segv-huge-16384x2048-flip2": "the z stream ends before its 16384 symbols do",
    "segv-huge-2048x8192-refiner": "the z stream ends before its 8192 symbols do",
    "gap-before-index": "1 unexplained bytes between the last record and the seek index",
    "forged-index-entry2": "the seek index puts segment 2 at offset",
    "y-short-word": "the y stream ends before its",
    "y-trailing-word": "the y stream does not end where its",
    "z-not-words": "not a rANS stream",
    "y-empty": "not a rANS stream",
    "z-bypass-run": "bypass value of 15 nibbles",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One fuzzer process: every stored stream, then ≈300 builtin mutations (at most 60 s of them)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    out = tmp / "fuzz.json"
    cmd = [sys.executable, str(ROOT / "bench" / "fuzz_decoder.py"), "--replay", str(FUZZ), "--runs", "300"]
    cmd += ["--seed", "11", "--max-seconds", "60", "--timeout", "30", "--mem-limit-mb", "2048"]
    cmd += ["--json", str(out), "--crash-dir", str(tmp / "findings")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # Generous: importing torch alone can take minutes on a loaded machine; the fuzzing is bounded above.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env, cwd=ROOT)
    assert out.is_file(), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    result["stdout"] = proc.stdout
    return result


@pytest.mark.timeout(600)
def test_stored_streams_decode_or_fail_with_a_message(report):
    files = {Path(k).stem: v for k, v in report["files"].items()}
    assert len(files) == len(list(FUZZ.rglob("*.gnvc"))) >= 15
    bad = {k: v for k, v in files.items() if v["outcome"] not in ("ok", "gnvc")}
    assert not bad, f"decoder findings: {bad}"
    for name, result in files.items():
        if name.startswith("seed-"):
            assert result["outcome"] == "ok" and result["frames"] > 0, (name, result)
        elif name in EXPECTED:
            assert result["outcome"] == "gnvc" and result["type"] == "BitstreamError", (name, result)
            assert EXPECTED[name] in result["message"], (name, result["message"])
        if result["outcome"] == "gnvc":
            assert result["message"].strip(), name
    assert set(EXPECTED) <= set(files)


@pytest.mark.timeout(600)
def test_short_fuzzing_slice_has_no_findings(report):
    """Every mutated stream decodes or fails with a GnvcError with a message."""
    assert not any(report["outcomes"].get(k) for k in FINDINGS), report["findings"]
    assert report["fuzz_runs"] >= 50, report["stdout"]
    # The slice reaches both ends of the decode path: clean refusals and complete decodes, steps 0 and 1.
    outcomes = report["fuzz_outcomes"]
    assert outcomes.get("steps0:gnvc", 0) > 0 and outcomes.get("steps0:ok", 0) > 0, outcomes
    assert outcomes.get("steps1:gnvc", 0) + outcomes.get("steps1:ok", 0) > 0, outcomes


@pytest.fixture(scope="module")
def tables() -> tuple[list, list, list]:
    gc = GaussianConditional(None)
    gc.update_scale_table(torch.exp(torch.linspace(torch.log(torch.tensor(0.11)), torch.log(torch.tensor(64.0)), 16)))
    return gc._quantized_cdf.tolist(), gc._cdf_length.tolist(), gc._offset.tolist()


def coded(tables: tuple, n: int = 400, seed: int = 0) -> tuple[bytes, list[int], list[int]]:
    """CompressAI-encoded symbols, with values far outside the tables (the bypass escape) mixed in."""
    cdfs, lengths, offsets = tables
    rng = random.Random(seed)
    indexes = [rng.randrange(len(cdfs)) for _ in range(n)]
    symbols = [round(rng.gauss(0, 3)) for _ in range(n)]
    for k in range(0, n, 37):
        symbols[k] = rng.choice([70, -90, 5000, -123456, 2**26])  # CompressAI's encoder hangs from 2**27 on
    return RansEncoder().encode_with_indexes(symbols, indexes, cdfs, lengths, offsets), symbols, indexes


def test_rans_decoder_matches_compressai(tables):
    cdfs, lengths, offsets = tables
    for seed in range(5):
        data, symbols, indexes = coded(tables, seed=seed)
        ours = rans_decode(data, indexes, cdfs, lengths, offsets, "s")
        assert ours == symbols == RansDecoder().decode_with_indexes(data, indexes, cdfs, lengths, offsets)


def test_rans_decoder_refuses_every_truncation_and_extension(tables):
    """No prefix, no extension and no odd length of a valid stream decodes: the stream must end exactly."""
    cdfs, lengths, offsets = tables
    data, _, indexes = coded(tables, n=120)
    variants = [data[:k] for k in range(len(data))] + [data + b"\0\0\0\0", data + data[:4], data + b"\x01"]
    for bad in variants:
        with pytest.raises(BitstreamError, match="corrupt bitstream: y "):
            rans_decode(bad, indexes, cdfs, lengths, offsets, "y")
    with pytest.raises(BitstreamError, match="does not end where its 119 symbols do"):
        rans_decode(data, indexes[:-1], cdfs, lengths, offsets, "y")


def test_rans_decoder_bit_flips_never_escape(tables):
    """Every single-bit flip of a stream decodes to something or raises BitstreamError, nothing else."""
    cdfs, lengths, offsets = tables
    data, symbols, indexes = coded(tables, n=60)
    refused = 0
    for bit in range(8 * len(data)):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            rans_decode(bytes(bad), indexes, cdfs, lengths, offsets, "y")
        except BitstreamError:
            refused += 1
    assert refused > len(data)  # the end-state check catches most flips before the latent CRC has to


def test_allocation_failure_is_an_input_error():
    header = Header("tiny", b"\0" * 8, 16384, 16384, 1, 25, 1, 0, 0.5, 0, 0)
    too_much = pytest.raises(InputError, match="not enough memory to decode this 16384x16384 stream")
    with too_much, out_of_memory_as_input_error(header):
        torch.empty(1 << 62, dtype=torch.uint8)  # a real allocation failure, not a mock
    with pytest.raises(RuntimeError, match="unrelated"), out_of_memory_as_input_error(header):
        raise RuntimeError("unrelated")  # other runtime errors are not relabelled
