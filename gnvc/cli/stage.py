"""``gnvc stage NAME``: run one pipeline stage with params.yaml (what every ``dvc.yaml`` stage calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from gnvc.errors import ConfigError
from gnvc.stages import STAGES

params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(path_type=Path),
    default=Path("params.yaml"),
    show_default=True,
    help="Parameter file.",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one parameter, e.g. --set data.train.synthetic_clips=8 (VALUE is YAML). Repeatable.",
)


def apply_overrides(params: dict[str, Any], overrides: tuple[str, ...]) -> dict[str, Any]:
    """``a.b.c=VALUE`` → params["a"]["b"]["c"] = yaml(VALUE), creating sections as needed."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: invalid YAML value {raw!r} ({e})") from None
        node = params
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return params


def load_params_with(params_path: Path, overrides: tuple[str, ...], *, required: bool = True) -> dict[str, Any]:
    from gnvc.stages.runner import load_params

    if not required and not params_path.exists():
        params: dict[str, Any] = {}
    else:
        params = load_params(params_path)
    return apply_overrides(params, overrides)


@click.command("stage")
@click.argument("name", type=click.Choice(STAGES))
@params_option
@set_option
@click.option(
    "--metrics-dir",
    type=click.Path(path_type=Path),
    default=Path("reports/stages"),
    show_default=True,
    help="Where the stage's metrics JSON (with its wall time) is written.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Training stages: data-parallel workers on Ray Train (the global batch stays batch_size). "
    "1 runs in this process without Ray.",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="GPUs each Ray Train worker reserves and trains on (0: CPU workers, gloo).",
)
@click.option(
    "--ray-storage",
    default=None,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="Where Ray Train keeps the reported checkpoints [default: build/<profile>/ray_train].",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Worker-group restarts (from the last checkpoint) after a worker dies.",
)
def stage(
    name: str,
    params_path: Path,
    overrides: tuple[str, ...],
    metrics_dir: Path,
    workers: int,
    gpus_per_worker: float,
    ray_storage: str | None,
    max_failures: int,
) -> None:
    """Run pipeline stage NAME (prepare, vae, latents, prior, stage1, stage2, evaluate)."""
    from gnvc.stages.runner import run_stage

    params = load_params_with(params_path, overrides)
    metrics = run_stage(
        name,
        params,
        metrics_dir=metrics_dir,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        ray_storage=ray_storage,
        max_failures=max_failures,
    )
    shown = ", ".join(f"{k}={v}" for k, v in metrics.items() if k != "stage")
    click.echo(f"stage {name}: {shown}")
