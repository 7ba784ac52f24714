"""The ``gnvc`` command line: one group, each command family in its own module.

Every :class:`gnvc.errors.GnvcError` becomes ``error: <message>`` on stderr with exit code 2, so
users see what is wrong with their input instead of a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from gnvc import __version__
from gnvc.errors import GnvcError

# Offline by construction: nothing in gnvc downloads, and the hub must not try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gnvc")
def cli() -> None:
    """gnvc: generative neural video codec and its training pipeline."""


def _register() -> None:
    from gnvc.cli.codec import decode, encode, info, model

    for command in (encode, decode, info, model):
        cli.add_command(command)
    from gnvc.cli.data import data
    from gnvc.cli.stage import stage

    cli.add_command(data)
    cli.add_command(stage)
    from gnvc.cli.evaluate import evaluate, metrics

    cli.add_command(metrics)
    cli.add_command(evaluate)  # "gnvc eval"
    from gnvc.cli.cache import cache

    cli.add_command(cache)
    from gnvc.cli.storage import storage

    cli.add_command(storage)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        cli.main(args=argv, prog_name="gnvc", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except GnvcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
