"""Regenerate the golden streams (only when the format changes on purpose; bump the format version then).

    python tests/data/golden/make_golden.py

Writes, next to this file: ``model/`` (the tiny profile made smaller, seed 0, without a refiner: the golden
check is about symbols and latents, which the refiner never touches), ``<name>.gnvc`` streams of a
panning photograph at small and odd sizes and several quality indices, and ``expected.json``
with the SHA-256 of each stream's decoded integer latents and its ``--steps 0`` frames
(``<name>.frames.npz``), against which every emulated machine is checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from skimage import data as skdata
from skimage.transform import resize

from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_stream, encode_video

HERE = Path(__file__).parent
SIZES = [(64, 48), (96, 80), (128, 96), (33, 17)]  # (width, height): the sizes that failed in v1, and an odd one
QUALITIES = [0, 3, 5]
FRAMES = 9
# A small model keeps the committed files small; the arithmetic is the tiny profile's at any width.
GOLDEN_OVERRIDES = {
    "refiner": None,
    "vae": {"base_dim": 8, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1},
    "codec": {"channels": 16, "y_channels": 8, "z_channels": 8, "context_channels": 8},
}


def clip(width: int, height: int, frames: int = FRAMES) -> np.ndarray:
    img = (resize(skdata.astronaut(), (2 * height + 40, 2 * width + 40), anti_aliasing=True) * 255).astype(np.uint8)
    return np.stack([img[2 * t : 2 * t + height, 3 * t : 3 * t + width] for t in range(frames)])


def main() -> None:
    torch.manual_seed(0)
    model = GnvcModel.from_profile("tiny", seed=0, overrides=GOLDEN_OVERRIDES)
    shutil.rmtree(HERE / "model", ignore_errors=True)
    model.save_pretrained(HERE / "model")
    model = GnvcModel.from_pretrained(HERE / "model")
    expected = {}
    for w, h in SIZES:
        for q in QUALITIES:
            for period in (0, 1) if (w, h) == (64, 48) else (0,):
                name = f"{w}x{h}_q{q}" + (f"_ip{period}" if period else "")
                data = encode_video(model, Video(clip(w, h), 25), q, seed=11, intra_period=period or None).data
                (HERE / f"{name}.gnvc").write_bytes(data)
                frames: list[np.ndarray] = []
                res = decode_stream(model, io.BytesIO(data), frames.append, steps=0)
                np.savez_compressed(HERE / f"{name}.frames.npz", frames=np.stack(frames))
                expected[name] = {
                    "latents_sha256": res.latents_sha256,
                    "frames_sha256": hashlib.sha256(np.stack(frames).tobytes()).hexdigest(),
                    "bytes": len(data),
                }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(expected)} golden streams to {HERE}")


if __name__ == "__main__":
    main()
