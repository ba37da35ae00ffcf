"""``bsr``: one click group whose subcommands live in their own modules and load lazily.

Each subcommand module defines a click command (or group) named in ``_COMMANDS``. Importing a
subcommand never happens unless it is invoked (or ``--help`` lists it), so ``bsr build`` does not pay
for importing torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from bsrdata.errors import BsrError

# command name -> "module:attribute"
_COMMANDS = {
    "build": "bsrdata.cli.build:build",
    "verify": "bsrdata.cli.verify:verify",
    "preview": "bsrdata.cli.preview:preview",
    "export": "bsrdata.cli.export:export",
    "merge": "bsrdata.cli.merge:merge",
    "depth": "bsrdata.cli.depth:depth",
    "train": "bsrdata.cli.train:train",
    "eval": "bsrdata.cli.evaluate:evaluate",
    "bench": "bsrdata.cli.bench:bench",
    "sr": "bsrdata.cli.sr:sr",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        target = _COMMANDS.get(name)
        if target is None:
            return None
        mod_name, attr = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                return None  # not implemented yet in this checkout
            raise
        return getattr(mod, attr)


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
