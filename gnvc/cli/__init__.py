"""The ``gnvc`` command line: one group, each command family in its own module.

Every :class:`gnvc.errors.GnvcError` becomes ``error: <message>`` on stderr instead of a
traceback. Exit status (the table is in ``docs/cli.md``): 0 success; 2 a usage error (click's
own option errors and :class:`gnvc.errors.UsageError`: bad options, bad input files, bad weights);
1 a runtime failure (any other GnvcError, an OSError such as a full disk, a failing backend);
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from gnvc import __version__
from gnvc.cli.options import add_quiet_options, quiet_option
from gnvc.errors import GnvcError, UsageError

# Offline by construction: nothing in gnvc downloads, and the hub must not try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)


EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gnvc")
@quiet_option
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
add_quiet_options(cli)  # every command takes --quiet too (main() repeats it for late registrations)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps every failure to one line on stderr and its exit status."""
    add_quiet_options(cli)
    try:
        cli.main(args=argv, prog_name="gnvc", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:  # click's own: bad or missing options and arguments
        e.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:  # click turns Ctrl-C inside a command into Abort
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except UsageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except GnvcError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_RUNTIME)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as e:  # a full disk, a permission, a vanished file mid-run: the environment's fault
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_RUNTIME)
