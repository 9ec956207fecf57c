"""The `skild-phys` command line: a thin shell over the library functions.

Each subcommand lives in its own module and imports heavy libraries lazily,
so `skild-phys --help` stays fast.
"""

import importlib

import click

from skild_base.errors import InputError
from skild_base.memory import keep_freed_memory
from skild_phys import __version__


class UserError(click.ClickException):
    """A one-sentence error for bad input, exit code 2 (no traceback)."""

    exit_code = 2


class SkildGroup(click.Group):
    """Click group that reports `InputError` (and missing files) as one line, exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as err:
            raise UserError(str(err)) from None


@click.group(cls=SkildGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="skild-phys")
def main():
    """SKILD diffusion and critical 2D Ising tools.

    Pipeline: simulate -> train -> superres/generate -> correlators.
    Run `skild-phys COMMAND --help` for each step.
    """
    keep_freed_memory()  # large tensors reuse the heap instead of being mapped and unmapped each time


# Each module below defines COMMANDS, a list of click commands it contributes.
_COMMAND_MODULES = [
    "simulate",
    "model",
    "evaluate",
    "correlators",
    "workflow",
    "schedule",
]

for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(f"skild_phys.cli.{_name}").COMMANDS:
        main.add_command(_command)
