"""The command-line reference docs/cli.md, generated from the click commands.

    python -m skild_phys.cli.reference > docs/cli.md

Each command's `--help` text is rendered at a fixed width, so the output depends only on
the code (and click's formatting), never on the terminal or the environment.
"""

from __future__ import annotations

import sys

import click

WIDTH = 100  # terminal width the help texts are wrapped to

HEADER = """\
# Command-line reference

Every `skild-phys` command with its `--help` text. This page is generated from the code:

```bash
python -m skild_phys.cli.reference > docs/cli.md
```

and a test checks that it is up to date. The [tutorial](tutorial.md) shows the commands in use.
"""


def root_context() -> click.Context:
    """Context of the `skild-phys` group with a fixed terminal width."""
    from skild_phys.cli import main

    return click.Context(main, info_name="skild-phys", terminal_width=WIDTH, max_content_width=WIDTH,
                         **main.context_settings)


def command_help(name: str | None = None) -> str:
    """The --help text of `skild-phys NAME` (of the group itself for None)."""
    root = root_context()
    if name is None:
        return root.command.get_help(root)
    command = root.command.commands[name]
    return command.get_help(click.Context(command, info_name=name, parent=root))


def reference() -> str:
    """docs/cli.md: the group's help, then every command's, in alphabetical order."""
    root = root_context()
    parts = [HEADER, "## skild-phys\n", "```text\n" + command_help() + "\n```\n"]
    names = sorted(root.command.commands)
    parts.append("Commands: " + ", ".join(f"[`{n}`](#skild-phys-{n})" for n in names) + ".\n")
    for name in names:
        parts += [f"## skild-phys {name}\n", "```text\n" + command_help(name) + "\n```\n"]
    return "\n".join(parts)


def main() -> int:
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
