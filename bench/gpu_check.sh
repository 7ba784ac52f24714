#!/usr/bin/env bash
# On a machine with a CUDA GPU: encode on CUDA, decode on the CPU and on CUDA, check that the decoded
# latents are identical everywhere (integer decoding loop), and print the CUDA speed of each stage.
#   bash bench/gpu_check.sh [WEIGHTS_DIR]    (default: an untrained tiny model)
# Writes bench/results/gpu_check.json and bench/results/codec_speed.json (CPU and CUDA rows).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" - "${1:-}" <<'PY'
import io, json, sys, tempfile
from pathlib import Path

import numpy as np
import torch

from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_stream, encode_video

assert torch.cuda.is_available(), "no CUDA device here"
weights = sys.argv[1]
if not weights:
    weights = Path(tempfile.mkdtemp()) / "tiny"
    GnvcModel.from_profile("tiny", seed=0).save_pretrained(weights)
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
video = Video(np.stack([np.roll(base, 3 * t, axis=1)[:256, :256] for t in range(33)]), 25)
rows = {}
for q in (0, 3, 5):
    gpu = GnvcModel.from_pretrained(weights).to("cuda")
    data = encode_video(gpu, video, q).data
    shas = {}
    for dev in ("cpu", "cuda"):
        model = GnvcModel.from_pretrained(weights).to(dev)
        frames = []
        res = decode_stream(model, io.BytesIO(data), frames.append, steps=0)
        shas[dev] = (res.latents_sha256, np.stack(frames))
    diff = int(np.abs(shas["cpu"][1].astype(int) - shas["cuda"][1].astype(int)).max())
    rows[f"q{q}"] = {"bytes": len(data), "latents_equal": shas["cpu"][0] == shas["cuda"][0], "max_pixel_diff": diff}
    print(f"q{q}: encoded on CUDA, {len(data)} B; latents CPU == CUDA: {rows[f'q{q}']['latents_equal']}; "
          f"max |Δpixel| {diff}", flush=True)
Path("bench/results").mkdir(parents=True, exist_ok=True)
Path("bench/results/gpu_check.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))
assert all(r["latents_equal"] for r in rows.values()), "latents differ between CUDA and CPU"
PY
"$PY" bench/codec_speed.py ${1:+--weights "$1"} --repeats 3
