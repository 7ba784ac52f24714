"""Options and helpers shared by several command modules."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gnvc.errors import InputError

if TYPE_CHECKING:
    import torch

weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Model directory (default: models/<profile>/).",
)


def atomic_output(path: Path, write) -> None:
    """Write to a temporary sibling then rename, so a failure never leaves a half-written output."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    is_dir = path.suffix == ""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    target = tmp / ("out" if is_dir else f"out{path.suffix}")
    try:
        write(target)
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def refuse_same_file(src: Path, dst: Path) -> None:
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise InputError(f"refusing to overwrite the input {src} with the output")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, refused with a clear message when no such device exists."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"--device {name}: no such CUDA device on this machine")
    return dev
