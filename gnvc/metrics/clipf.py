"""CLIP-F: mean cosine similarity of consecutive frames' CLIP image embeddings (temporal consistency).

CLIP weights cannot be downloaded here, so CLIP-F runs only when a local Hugging Face
``transformers`` CLIP directory is given (``config.json`` + weights, e.g. a snapshot of
``openai/clip-vit-base-patch32``; a full ``CLIPModel`` or a ``CLIPVisionModelWithProjection``).
The backbone is pinned by recording its architecture and a SHA-256 over its weight files next to
the values. Preprocessing is the directory's own image-processor config when present, CLIP's
standard one (resize, centre crop, OpenAI mean/std) otherwise. Values are cosines in [−1, 1]
(1 = consecutive frames embed identically); higher is better.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gnvc.errors import WeightsError
from gnvc.metrics._frames import batches

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def no_clip_message() -> str:
    return (
        "CLIP-F needs local CLIP weights (no download is possible): pass a transformers CLIP directory "
        "with config.json and model weights (e.g. --clip-weights /path/to/clip-vit-base-patch32)"
    )


@dataclass
class ClipBackbone:
    model: torch.nn.Module
    processor: object
    device: str
    info: dict


def _weights_hash(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=2)
def load_clip(path: str, device: str = "cpu") -> ClipBackbone:
    """Load a local transformers CLIP image tower (cached per path and device)."""
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise WeightsError(f"{p}: not a transformers CLIP directory (no config.json). {no_clip_message()}")
    if not any(f.suffix in WEIGHT_SUFFIXES for f in p.iterdir()):
        raise WeightsError(f"{p}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in the CLIP directory")
    try:
        from transformers import AutoConfig, CLIPImageProcessor, CLIPModel, CLIPVisionModelWithProjection
    except ImportError:
        raise WeightsError("CLIP-F needs the transformers package: pip install transformers") from None
    config = AutoConfig.from_pretrained(p, local_files_only=True)
    if config.model_type == "clip":
        model = CLIPModel.from_pretrained(p, local_files_only=True)
        image_size = config.vision_config.image_size
    elif config.model_type == "clip_vision_model":
        model = CLIPVisionModelWithProjection.from_pretrained(p, local_files_only=True)
        image_size = config.image_size
    else:
        raise WeightsError(f"{p}: model_type {config.model_type!r} is not a CLIP model")
    if (p / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(p, local_files_only=True)
    else:
        processor = CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    info = {
        "backbone": f"{config.model_type}:{getattr(config, '_name_or_path', '') or p.name}",
        "image_size": int(image_size),
        "weights_sha256": _weights_hash(p),
    }
    return ClipBackbone(model.eval().requires_grad_(False).to(device), processor, device, info)


@torch.no_grad()
def clip_embeddings(frames: np.ndarray, backbone: ClipBackbone, batch_size: int = 8) -> torch.Tensor:
    """L2-normalised image embeddings (T, D) of uint8 RGB frames."""
    out = []
    for s in batches(frames.shape[0], batch_size):
        inputs = backbone.processor(images=list(frames[s]), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(backbone.device)
        if hasattr(backbone.model, "get_image_features"):
            emb = backbone.model.get_image_features(pixel_values=pixel_values)
            emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output  # transformers 5 returns an output object
        else:
            emb = backbone.model(pixel_values=pixel_values).image_embeds
        out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
    return torch.cat(out)


def clipf_pairs(frames: np.ndarray, clip_path: str | Path, *, device: str = "cpu", batch_size: int = 8) -> np.ndarray:
    """Cosine similarity of CLIP embeddings of frames t−1 and t, for t = 1..T−1."""
    emb = clip_embeddings(frames, load_clip(str(clip_path), str(device)), batch_size)
    return (emb[1:] * emb[:-1]).sum(-1).double().numpy()
