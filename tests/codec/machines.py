"""Emulated machines: decode streams in subprocesses whose float kernels differ from the encoder's.

A stream must decode to the same symbols and latents on any machine. This machine can imitate
others per process: thread counts, ATen's CPU kernel set (``ATEN_CPU_CAPABILITY``), oneDNN capped
to AVX2 (an AVX2-only laptop), oneDNN off, and float32 matmul/convolution inputs rounded to TF32
(what an NVIDIA GPU does by default). Each setup decodes every stream with ``--steps 0`` and
reports the SHA-256 of the decoded integer latents and the decoded frames, which the caller
compares with the encoder's. Used by tests/codec/test_machines.py and bench/emulated_machines.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SETUPS: dict[str, dict[str, str]] = {
    "threads=1": {"OMP_NUM_THREADS": "1", "GNVC_EMULATE_THREADS": "1"},
    "threads=2": {"OMP_NUM_THREADS": "2", "GNVC_EMULATE_THREADS": "2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkldnn disabled": {"GNVC_EMULATE_NO_MKLDNN": "1"},
    "TF32 inputs (GPU default)": {"GNVC_EMULATE_TF32": "1"},
}

# Runs in the subprocess: set up the emulation, decode every stream, print JSON.
_DECODER = r"""
import hashlib, io, json, os, sys
import numpy as np
import torch
import torch.nn.functional as F

if os.environ.get("GNVC_EMULATE_THREADS"):
    torch.set_num_threads(int(os.environ["GNVC_EMULATE_THREADS"]))
if os.environ.get("GNVC_EMULATE_NO_MKLDNN"):
    torch.backends.mkldnn.enabled = False
if os.environ.get("GNVC_EMULATE_TF32"):
    def tf32(x):
        if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
            i = x.contiguous().view(torch.int32)
            return ((i + 0x1000) & ~0x1FFF).view(torch.float32)  # keep a 10-bit mantissa, round to nearest
        return x
    def wrap(fn):
        return lambda *a, **k: fn(*[tf32(v) for v in a], **{n: tf32(v) for n, v in k.items()})
    for name in ("conv1d", "conv2d", "conv3d", "linear"):
        setattr(F, name, wrap(getattr(F, name)))
    torch.matmul, torch.bmm, torch.mm = wrap(torch.matmul), wrap(torch.bmm), wrap(torch.mm)

from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_stream

jobs = json.loads(sys.argv[1])
models, out = {}, {}
for name, (model_dir, stream) in jobs.items():
    model = models.get(model_dir) or models.setdefault(model_dir, GnvcModel.from_pretrained(model_dir))
    frames = []
    try:
        with open(stream, "rb") as f:
            res = decode_stream(model, f, frames.append, steps=0)
        np.save(stream + "." + os.environ["GNVC_SETUP_TAG"] + ".npy", np.stack(frames))
        out[name] = {"ok": True, "latents_sha256": res.latents_sha256}
    except Exception as e:  # reported, not raised: the table shows which setups fail
        out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
print("RESULT " + json.dumps(out))
"""


def decode_in_setup(setup: str, jobs: dict[str, tuple[str, str]], timeout: float = 600) -> dict[str, dict]:
    """Decode ``{name: (model_dir, stream_path)}`` in a subprocess emulating ``setup``.

    Returns ``{name: {"ok", "latents_sha256" | "error", "frames" (path of the decoded frames .npy)}}``.
    """
    tag = "".join(c if c.isalnum() else "_" for c in setup)
    env = {**os.environ, **SETUPS[setup], "GNVC_SETUP_TAG": tag}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _DECODER, json.dumps(jobs)],
        env=env, cwd=root, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"setup {setup!r}: decoder process failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT ") :])
    for name, (_, stream) in jobs.items():
        out[name]["frames"] = f"{stream}.{tag}.npy"
    return out


GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
FRESH_SIZES = [(64, 48), (96, 80), (128, 96), (33, 17)]  # (width, height): v1 failed on the first three
FRESH_QUALITIES = [0, 3, 5]


def build_jobs(root: Path, model, model_dir: Path) -> tuple[dict[str, tuple[str, str]], dict[str, tuple]]:
    """Streams to decode in every setup and what each must decode to (in the default setup, here):
    the committed golden streams against their pinned hashes, and fresh streams that ``model``
    (saved at ``model_dir``) encodes now. Returns ``jobs`` and ``{name: (latents_sha256, frames)}``."""
    import io
    import shutil

    import numpy as np

    from gnvc.io.video import Video
    from gnvc.videocodec import decode_stream, encode_video

    golden = json.loads((GOLDEN / "expected.json").read_text())
    jobs, expected = {}, {}
    for name, exp in golden.items():
        stream = root / f"golden_{name}.gnvc"
        shutil.copyfile(GOLDEN / f"{name}.gnvc", stream)
        jobs[f"golden {name}"] = (str(GOLDEN / "model"), str(stream))
        expected[f"golden {name}"] = (exp["latents_sha256"], np.load(GOLDEN / f"{name}.frames.npz")["frames"])
    rng = np.random.default_rng(0)
    for w, h in FRESH_SIZES:
        base = rng.integers(0, 256, (h, w, 3))
        video = Video(np.stack([np.roll(base, 2 * t, axis=1) for t in range(9)]).astype(np.uint8), 25)
        for q in FRESH_QUALITIES:
            data = encode_video(model, video, q).data
            stream = root / f"fresh_{w}x{h}_q{q}.gnvc"
            stream.write_bytes(data)
            frames: list = []
            res = decode_stream(model, io.BytesIO(data), frames.append, steps=0)
            jobs[f"fresh {w}x{h} q{q}"] = (str(model_dir), str(stream))
            expected[f"fresh {w}x{h} q{q}"] = (res.latents_sha256, np.stack(frames))
    return jobs, expected


def compare(results: dict[str, dict], expected: dict[str, tuple]) -> list[dict]:
    """One row per stream: decoded at all, latents identical, max pixel difference (levels)."""
    import numpy as np

    rows = []
    for name, (latents_sha, frames) in expected.items():
        r = results[name]
        diff = int(np.abs(np.load(r["frames"]).astype(int) - frames.astype(int)).max()) if r["ok"] else None
        rows.append(
            {"stream": name, "decoded": r["ok"], "latents_equal": bool(r["ok"] and r["latents_sha256"] == latents_sha),
             "max_pixel_diff": diff, "error": r.get("error", "")}
        )  # fmt: skip
    return rows
