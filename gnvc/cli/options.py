"""Options and helpers shared by several command modules."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gnvc.errors import InputError, UsageError, disk_full_as_error

if TYPE_CHECKING:
    import torch

weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Model directory (default: models/<profile>/).",
)


QUIET_KEY = "gnvc.quiet"


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # ctx.meta is shared by the whole invocation (group and command), and only by it.
    if value:
        ctx.meta[QUIET_KEY] = True


quiet_option = click.option(
    "--quiet",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_quiet,
    help="No progress bars and no status lines; errors are still printed.",
)


def add_quiet_options(group: click.Group) -> None:
    """Give every command under ``group`` (subgroups included) a ``--quiet`` flag of its own."""
    for command in group.commands.values():
        if not any(p.name == "quiet" for p in command.params):
            quiet_option(command)
        if isinstance(command, click.Group):
            add_quiet_options(command)


def is_quiet() -> bool:
    """Whether ``gnvc --quiet`` or ``gnvc COMMAND --quiet`` was given in the running invocation."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(QUIET_KEY))


def show_progress() -> bool:
    """Progress bars only for a person watching: stderr is a terminal and --quiet was not given."""
    return not is_quiet() and sys.stderr.isatty()


def status(message: str, *, err: bool = False) -> None:
    """A status line (what was written, how long it took), silenced by --quiet."""
    if not is_quiet():
        click.echo(message, err=err)


def check_quality(quality: int, weights_dir: Path) -> None:
    """``quality`` against the model's range, read from its codec config (JSON only, nothing loaded)."""
    from gnvc.models.schema import read_codec_config

    n = read_codec_config(weights_dir)["num_qualities"]
    if not 0 <= quality < n:
        raise UsageError(f"--quality must be in 0..{n - 1} for the weights in {weights_dir}, got {quality}")


def atomic_output(path: Path, write) -> None:
    """Write to a temporary sibling then rename, so a failure never leaves a half-written output."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    with disk_full_as_error(path):  # a full disk: one clear line, the temporary removed below
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
