"""``gnvc cache``: where gnvc keeps its caches, and how to remove them (and gnvc 0.1's leftovers).

gnvc writes only its outputs and its own cache directory (``$GNVC_CACHE``, else
``$XDG_CACHE_HOME/gnvc``, else ``~/.cache/gnvc``). gnvc 0.1 also copied AlexNet/VGG16 checkpoints
with NaN classifier weights into torch hub's cache under torchvision's file names;
``gnvc cache clean --legacy`` removes exactly those (each marked by a ``<name>.gnvc-seeded.txt``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from gnvc.errors import GnvcError, UsageError


class CacheError(GnvcError):
    """A cache directory cannot be inspected or removed (a runtime failure: exit status 1)."""


class CacheUsageError(CacheError, UsageError):
    """GNVC_CACHE points somewhere gnvc refuses to remove (fixed by the user: exit status 2)."""


def _cache_dir() -> Path:
    from gnvc.metrics.weights import cache_dir

    return cache_dir()


def _tree_size(root: Path) -> tuple[int, int]:
    """(number of files, total bytes) under ``root``, symlinks counted but not followed."""
    files = size = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
            files += 1
    return files, size


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _check_removable(path: Path) -> None:
    """Refuse to delete a directory that cannot be gnvc's alone: ``/``, the home directory or above it."""
    resolved = path.resolve()
    home = Path.home().resolve()
    if resolved == Path(resolved.anchor) or resolved == home or resolved in home.parents:
        raise CacheUsageError(
            f"{path}: refusing to remove it as gnvc's cache; point GNVC_CACHE at a directory of its own"
        )
    if path.is_symlink() or not path.is_dir():
        raise CacheUsageError(f"{path}: not a directory; remove it yourself if it is gnvc's cache")


@click.group("cache")
def cache() -> None:
    """gnvc's own cache directory (converted metric backbones): show or remove it."""


@cache.command("dir")
def cache_dir_command() -> None:
    """Print the cache directory ($GNVC_CACHE, else $XDG_CACHE_HOME/gnvc, else ~/.cache/gnvc)."""
    click.echo(str(_cache_dir()))


@cache.command("clean")
@click.option(
    "--legacy",
    is_flag=True,
    help="Instead, remove the NaN-classifier AlexNet/VGG16 checkpoints gnvc 0.1 wrote into torch hub's cache.",
)
def clean(legacy: bool) -> None:
    """Remove gnvc's cache directory; with --legacy, gnvc 0.1's files in torch hub's cache instead.

    The cache is rebuilt on demand. --legacy removes a checkpoint in torch.hub.get_dir()/checkpoints
    only if its <name>.gnvc-seeded.txt marker sits next to it, and the marker with it; nothing else.
    """
    if legacy:
        _clean_legacy()
        return
    path = _cache_dir()
    if not path.exists() and not path.is_symlink():
        click.echo(f"nothing to remove: {path} does not exist")
        return
    _check_removable(path)
    files, size = _tree_size(path)
    click.echo(f"removing {path} ({files} files, {_human(size)})")
    try:
        shutil.rmtree(path)
    except OSError as e:
        raise CacheError(f"{path}: could not remove it completely ({e})") from None


def _clean_legacy() -> None:
    import torch

    from gnvc.metrics.weights import legacy_hub_files

    hub = Path(torch.hub.get_dir())
    try:
        found = legacy_hub_files(hub)
    except OSError as e:
        raise CacheError(f"{hub / 'checkpoints'}: cannot list it ({e})") from None
    if not found:
        click.echo(f"nothing to remove: no gnvc-seeded checkpoints in {hub / 'checkpoints'}")
        return
    for path in found:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CacheError(f"{path}: could not remove it ({e})") from None
        click.echo(f"removed {path}")
