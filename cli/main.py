"""``bsr``: one click group whose subcommands live in their own modules and load lazily.

Each subcommand module defines a click command (or group), pre-declared in :data:`COMMANDS` (a
:class:`bsrdata.registry.Registry` of ``"module:attr"`` targets). Importing a
subcommand never happens unless it is invoked (or ``--help`` lists it), so ``bsr build`` does not pay
for importing torch.
"""

from __future__ import annotations

import importlib.util
import sys

import click

from bsrdata.errors import BsrError
from bsrdata.registry import Registry

# command name -> "module:attribute", imported only when the command runs (or --help lists it)
COMMANDS = Registry("command")
for _name, _target in (
    ("build", "bsrdata.cli.build:build"),
    ("verify", "bsrdata.cli.verify:verify"),
    ("preview", "bsrdata.cli.preview:preview"),
    ("export", "bsrdata.cli.export:export"),
    ("merge", "bsrdata.cli.merge:merge"),
    ("depth", "bsrdata.cli.depth:depth"),
    ("train", "bsrdata.cli.train:train"),
    ("eval", "bsrdata.cli.evaluate:evaluate"),
    ("bench", "bsrdata.cli.bench:bench"),
    ("sr", "bsrdata.cli.sr:sr"),
    ("info", "bsrdata.cli.info:info"),
    ("convert", "bsrdata.cli.convert:convert"),
    ("reproduce", "bsrdata.cli.reproduce:reproduce"),
):
    COMMANDS.declare(_name, _target)
del _name, _target


class LazyGroup(click.Group):
    """A click group whose subcommands come from :data:`COMMANDS`, each imported on first use."""

    def list_commands(self, ctx):
        return COMMANDS.names()

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None  # click reports "No such command"
        module = COMMANDS.target(name).partition(":")[0]
        if importlib.util.find_spec(module) is None:
            return None  # not implemented in this checkout
        return COMMANDS.get(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bsrdata")
def cli():
    """Blind SR under space-variant defocus: build datasets, train, evaluate, benchmark."""


def main(argv=None):
    """Entry point: runs the group, turning BsrError into one line and exit status 1."""
    try:
        cli.main(args=argv, prog_name="bsr", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("bsr: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BsrError as exc:
        click.echo(f"bsr: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
