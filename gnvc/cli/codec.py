"""``gnvc encode`` / ``decode`` / ``info`` / ``model init``."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from gnvc.cli.options import (
    atomic_output,
    check_quality,
    refuse_same_file,
    resolve_device,
    show_progress,
    status,
    weights_option,
)
from gnvc.errors import InputError, WeightsError

console = Console(stderr=True)


device_option = click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, cuda or cuda:N. Streams decode identically on every device (integer decoding loop).",
)


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output .gnvc file.")
@click.option("--profile", default=None, help="Profile (tiny, base, small, wan2.1); default: the weights' profile.")
@click.option("-q", "--quality", type=int, default=2, show_default=True, help="Quality index (higher: more bits).")
@weights_option
@click.option("--size", default=None, help="WIDTHxHEIGHT, for raw .yuv input.")
@click.option("--fps", type=float, default=None, help="Frame rate (raw .yuv input, or to override).")
@click.option("--frames", "max_frames", type=int, default=None, help="Encode at most this many frames.")
@click.option(
    "--intra-period",
    type=int,
    default=None,
    help="Latent frames per I-latent (a seek point every 1+4(N-1) frames); default: one P-chain for the video.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Refinement noise seed written in the header.")
@click.option(
    "--t-n", "t_n", type=float, default=None, help="Refinement start time t_N in (0, 1), written in the header."
)
@click.option("--steps", type=int, default=None, help="Refinement steps (0..255) written in the header.")
@device_option
def encode(
    input_path, output, profile, quality, weights, size, fps, max_frames, intra_period, seed, t_n, steps, device
):
    """Encode a video (any PyAV input, .y4m, raw .yuv, or a PNG folder) to a .gnvc file."""
    from gnvc.codec.container import MAX_SIDE
    from gnvc.io.stream import open_video
    from gnvc.io.video import parse_size
    from gnvc.models.model_dir import load_model, resolve_weights
    from gnvc.models.schema import read_index
    from gnvc.videocodec.encoder import check_coding_options, encode_stream

    # Every option first, then the weights' JSON, then the input; the model is loaded last.
    check_coding_options(quality=quality, intra_period=intra_period, t_n=t_n, steps=steps)
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--frames must be ≥ 1, got {max_frames}")
    if fps is not None and not 0 < fps <= 1000:
        raise InputError(f"--fps must be in (0, 1000], got {fps}")
    if output.suffix.lower() != ".gnvc":
        raise InputError(f"{output}: the output of encode must be a .gnvc file")
    frame_size = parse_size(size) if size else None
    if frame_size is not None and max(frame_size) > MAX_SIDE:
        raise InputError(f"--size {size}: each side must be at most {MAX_SIDE} (what the .gnvc header holds)")
    refuse_same_file(input_path, output)
    dev = resolve_device(device)
    weights_dir = resolve_weights(weights, profile)
    found = read_index(weights_dir)["profile"]["name"]
    if profile is not None and found != profile:
        raise WeightsError(f"the weights in {weights_dir} are of profile {found!r}, not {profile!r}")
    check_quality(quality, weights_dir)
    with open_video(input_path, size=frame_size, fps=fps, max_frames=max_frames) as reader:
        model = load_model(weights_dir, profile).to(dev)
        info = reader.info
        # The reader stops at the input's end (or --frames); a container's own frame count can be
        # wrong, so the header's count is the number of frames actually read (patched at the end).
        box = {}
        bar = show_progress()

        def write(path: Path) -> None:
            with open(path, "wb") as f:
                box["r"] = encode_stream(
                    model, reader, f, width=info.width, height=info.height, fps=info.fps, quality=quality,
                    num_frames=None, intra_period=intra_period, t_n=t_n, steps=steps, seed=seed, progress=bar,
                )  # fmt: skip

        atomic_output(output, write)
    r = box["r"]
    h = r.header
    status(
        f"{output}: {h.frames} frames {h.width}x{h.height} @ {h.fps_num / h.fps_den:.3f} fps, "
        f"profile {model.name}, quality {quality}: {r.num_bytes} bytes, {r.bpp:.5f} bpp, {r.seconds:.2f} s"
    )


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Output: .mp4/.mkv/.avi/.mov, .y4m, .yuv, or a folder for PNGs.",
)
@weights_option
@click.option("--steps", type=int, default=None, help="Refinement steps (overrides the header; 0: no refinement).")
@click.option("--start", type=int, default=0, show_default=True, help="First frame to decode (seeks to its I-latent).")
@click.option("--frames", type=int, default=None, help="Decode at most this many frames.")
@device_option
def decode(input_path, output, weights, steps, start, frames, device) -> None:
    """Decode a .gnvc file to a video."""
    from gnvc.codec.container import ContainerReader
    from gnvc.io.stream import FrameWriter, check_output_path
    from gnvc.models.model_dir import load_model
    from gnvc.videocodec.decoder import check_range, decode_stream
    from gnvc.videocodec.encoder import check_coding_options

    check_coding_options(steps=steps)
    if start < 0:
        raise InputError(f"--start must be ≥ 0, got {start}")
    refuse_same_file(input_path, output)
    check_output_path(output)
    dev = resolve_device(device)
    with open(input_path, "rb") as f:
        header = ContainerReader(f).header
        check_range(header, start, frames)
        model = load_model(weights, header.profile, header.weights_hash).to(dev)
        fps = Fraction(header.fps_num, header.fps_den)
        with FrameWriter(output, width=header.width, height=header.height, fps=fps) as writer:
            res = decode_stream(
                model, f, writer.write, steps=steps, start=start, frames=frames, progress=show_progress()
            )
    status(f"{output}: {res.frames} frames {header.width}x{header.height}, {res.seconds:.2f} s")


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with every latent frame's sizes).")
def info(input_path, as_json) -> None:
    """Show a .gnvc file's header, seek index and per-latent-frame sizes (reads one record at a time)."""
    from gnvc.codec.container import INTRA, ContainerReader

    with open(input_path, "rb") as f:
        reader = ContainerReader(f)
        h = reader.header
        index = reader.index()
        latents = [
            {"latent": r.latent, "type": "I" if r.kind == INTRA else "P", "z_bytes": len(r.streams[0]),
             "y_bytes": len(r.streams[1])}
            for r in reader.records()
        ]  # fmt: skip
    file_bytes = input_path.stat().st_size
    summary = {
        "file_bytes": file_bytes,
        "bpp": 8 * file_bytes / (h.frames * h.width * h.height),
        "format_version": 2,
        "profile": h.profile,
        "weights_hash": h.weights_hash.hex(),
        "width": h.width,
        "height": h.height,
        "frames": h.frames,
        "fps": f"{h.fps_num}/{h.fps_den}",
        "quality": h.quality,
        "t_n": round(h.t_n, 6),
        "steps": h.steps,
        "seed": h.seed,
        "intra_period": h.intra_period,
        "latent_frames": h.num_latents,
        "seek_index": [{"frame": e.first_frame, "latent": e.first_latent, "offset": e.offset} for e in index],
        "latents": latents,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for k, v in summary.items():
        if k not in ("latents", "seek_index"):
            click.echo(f"{k:>14}: {v}")
    table = Table("segment", "first frame", "offset", "latents", "bytes (z+y)")
    bounds = [e.first_latent for e in index] + [h.num_latents]
    for s, e in enumerate(index):
        seg = latents[bounds[s] : bounds[s + 1]]
        z, y = sum(x["z_bytes"] for x in seg), sum(x["y_bytes"] for x in seg)
        table.add_row(str(s), str(e.first_frame), str(e.offset), str(len(seg)), f"{z}+{y}")
    Console().print(table)


@click.group()
def model() -> None:
    """Model directories."""


@model.command("init")
@click.option("--profile", default="tiny", show_default=True, help="Profile name or YAML file.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Model directory to write.")
@click.option("--seed", type=int, default=0, show_default=True)
def model_init(profile, output, seed) -> None:
    """Write an untrained (but fully working) model directory of a profile."""
    from gnvc.models.model_dir import GnvcModel

    m = GnvcModel.from_profile(profile, seed=seed)
    m.save_pretrained(output)
    status(f"{output}: untrained {m.name} model, weights hash {m.weights_hash.hex()}")


@model.command("pack")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Model directory to write.")
@click.option(
    "--half/--exact",
    default=False,
    show_default=True,
    help="--half rounds every weight to float16 first (a new model with its own weights hash, about half "
    "the size); --exact keeps the model as it is (its weights hash unchanged).",
)
def model_pack(source, output, half) -> None:
    """Rewrite a model directory compactly: each tensor in the narrowest dtype holding it exactly.

    How the shipped releases in weights/ are made (`gnvc model pack models/base -o weights/base --half`).
    """
    from gnvc.models.model_dir import GnvcModel

    m = GnvcModel.from_pretrained(source)
    old = m.weights_hash.hex()
    if half:
        n = m.round_weights_to_half()
        status(f"rounded {n} float tensors to float16 values: weights hash {old} -> {m.weights_hash.hex()}")
    m.save_pretrained(output, compact=True)
    before, after = (sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file()) for d in (source, output))
    status(
        f"{output}: {m.name} model, weights hash {m.weights_hash.hex()}, "
        f"{after / 1e6:.1f} MB (from {before / 1e6:.1f} MB)"
    )
