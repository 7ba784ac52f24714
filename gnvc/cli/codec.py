"""``gnvc encode`` / ``decode`` / ``info`` / ``model init``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from gnvc.cli.options import atomic_output, refuse_same_file, weights_option

console = Console(stderr=True)


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output .gnvc file.")
@click.option("--profile", default=None, help="Profile (tiny, small, wan2.1); default: the weights' profile.")
@click.option("-q", "--quality", type=int, default=2, show_default=True, help="Quality index (higher: more bits).")
@weights_option
@click.option("--size", default=None, help="WIDTHxHEIGHT, for raw .yuv input.")
@click.option("--fps", type=float, default=None, help="Frame rate (raw .yuv input, or to override).")
@click.option("--frames", "max_frames", type=int, default=None, help="Encode at most this many frames.")
@click.option("--gop", type=int, default=None, help="Frames per independently coded group (1+4k).")
@click.option("--seed", type=int, default=0, show_default=True, help="Refinement noise seed written in the header.")
@click.option("--t-n", "t_n", type=float, default=None, help="Refinement start time t_N written in the header.")
@click.option("--steps", type=int, default=None, help="Refinement steps written in the header.")
def encode(input_path, output, profile, quality, weights, size, fps, max_frames, gop, seed, t_n, steps) -> None:
    """Encode a video (any PyAV input, .y4m, raw .yuv, or a PNG folder) to a .gnvc file."""
    from gnvc.codec.video_codec import encode_video
    from gnvc.io.video import parse_size, read_video
    from gnvc.models.model_dir import load_model

    refuse_same_file(input_path, output)
    model = load_model(weights, profile)  # first: a missing model fails before a long read
    video = read_video(input_path, size=parse_size(size) if size else None, fps=fps, max_frames=max_frames)
    result = encode_video(model, video, quality, gop_frames=gop, t_n=t_n, steps=steps, seed=seed, progress=True)
    atomic_output(output, lambda p: p.write_bytes(result.data))
    click.echo(
        f"{output}: {video.num_frames} frames {video.width}x{video.height} @ {float(video.fps):.3f} fps, "
        f"profile {model.name}, quality {quality}: {result.num_bytes} bytes, {result.bpp:.5f} bpp, "
        f"{result.seconds:.2f} s"
    )


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Output: .mp4/.mkv, .y4m, or a folder for PNGs.",
)
@weights_option
@click.option("--steps", type=int, default=None, help="Refinement steps (overrides the header; 0: no refinement).")
def decode(input_path, output, weights, steps) -> None:
    """Decode a .gnvc file to a video."""
    from gnvc.codec.bitstream import read_header
    from gnvc.codec.video_codec import decode_video
    from gnvc.io.video import write_video
    from gnvc.models.model_dir import load_model

    refuse_same_file(input_path, output)
    if steps is not None and steps < 0:
        raise click.BadParameter("must be ≥ 0", param_hint="--steps")
    data = input_path.read_bytes()
    header, _ = read_header(data)
    model = load_model(weights, header.profile)
    t0 = time.perf_counter()
    video = decode_video(model, data, steps=steps, progress=True)
    atomic_output(output, lambda p: write_video(p, video))
    click.echo(f"{output}: {video.num_frames} frames {video.width}x{video.height}, {time.perf_counter() - t0:.2f} s")


@click.command()
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(input_path, as_json) -> None:
    """Show a .gnvc file's header and per-group sizes."""
    from gnvc.codec.bitstream import read_bitstream

    data = input_path.read_bytes()
    bs = read_bitstream(data)
    h = bs.header
    groups = [
        {
            "group": i,
            "frames": h.group_frames(i),
            "bytes": len(g.payload()),
            "latent_frames": [[len(s) for s in f] for f in g.streams],
        }
        for i, g in enumerate(bs.groups)
    ]
    summary = {
        "file_bytes": len(data),
        "bpp": 8 * len(data) / (h.frames * h.width * h.height),
        "profile": h.profile,
        "weights_hash": h.weights_hash.hex(),
        "width": h.width,
        "height": h.height,
        "frames": h.frames,
        "fps": f"{h.fps_num}/{h.fps_den}",
        "gop_frames": h.gop_frames,
        "quality": h.quality,
        "t_n": round(h.t_n, 6),
        "steps": h.steps,
        "seed": h.seed,
        "groups": groups,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for k, v in summary.items():
        if k != "groups":
            click.echo(f"{k:>13}: {v}")
    table = Table("group", "frames", "bytes", "latent frames: z+y bytes")
    for g in groups:
        table.add_row(
            str(g["group"]), str(g["frames"]), str(g["bytes"]), " ".join(f"{z}+{y}" for z, y in g["latent_frames"])
        )
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
    click.echo(f"{output}: untrained {m.name} model, weights hash {m.weights_hash.hex()}")
