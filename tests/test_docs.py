"""The documentation cannot drift from the code.

- docs/cli.md is exactly what `python -m skild_phys.cli.reference` prints;
- every `skild-phys COMMAND --option` quoted in README.md and docs/*.md exists;
- the tutorial's cheap commands run (at reduced sample counts), in order, in a fresh directory.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from skild_phys.cli import main
from skild_phys.cli.reference import reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
TUTORIAL = ROOT / "docs" / "tutorial.md"
MAX_SAMPLES = 200  # sample counts in tutorial commands are capped at this in the test
RUN_IN_TEST = {"simulate", "info", "correlators", "schedule", "coarsen", "run"}  # train/superres/generate: checked only


def fenced_blocks(text: str, languages=("bash", "sh", "console", "")) -> list[str]:
    """Bodies of ``` fenced code blocks whose language is one of `languages`."""
    return [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M) if lang in languages]


def skild_commands(text: str, inline: bool = True) -> list[list[str]]:
    """Argument lists of the `skild-phys ...` commands in fenced blocks (and inline code spans) of a page."""
    sources = [block.replace("\\\n", " ") for block in fenced_blocks(text)]
    if inline:
        sources += [span.replace("\n", " ") for span in re.findall(r"`(skild-phys [^`]+)`", text)]
    commands = []
    for source in sources:
        for line in source.splitlines():
            line = line.strip().removeprefix("$ ").split(" #")[0]
            if not line.startswith("skild-phys "):
                continue
            tokens = shlex.split(line.split(" | ")[0].split(" && ")[0].split(" > ")[0])
            commands.append([t.strip("[]") for t in tokens[1:] if t.strip("[]")])
    return commands


def command_options(command: click.Command) -> set[str]:
    """Every option spelling a click command accepts (including --no-... and the help names)."""
    names = {"-h", "--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def test_option_check_sees_commands_and_options():
    page = "```bash\nskild-phys simulate --L 8 \\\n    --bogus 1 --out x.zarr  # note\n```\nand `skild-phys info s.zarr`."
    assert skild_commands(page) == [["simulate", "--L", "8", "--bogus", "1", "--out", "x.zarr"], ["info", "s.zarr"]]
    assert "--bogus" not in command_options(main.commands["simulate"])
    assert {"--periodic", "--no-periodic"} <= command_options(main.commands["train"])


def test_cli_reference_is_generated():
    assert (ROOT / "docs" / "cli.md").read_text() == reference(), \
        "docs/cli.md is stale: run `python -m skild_phys.cli.reference > docs/cli.md`"


def test_cli_reference_covers_every_command():
    text = (ROOT / "docs" / "cli.md").read_text()
    for name in main.commands:
        assert f"## skild-phys {name}\n" in text


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_documented_options_exist(page):
    problems = []
    for args in skild_commands(page.read_text()):
        if not args or args[0].isupper() or args[0].startswith("-"):  # `skild-phys COMMAND --help`, `--version`
            continue
        if args[0] not in main.commands:
            problems.append(f"unknown command skild-phys {args[0]}")
            continue
        known = command_options(main.commands[args[0]])
        for token in args[1:]:
            option = token.split("=")[0]
            if option.startswith("--") and option not in known:
                problems.append(f"skild-phys {args[0]} has no option {option}")
    assert not problems, f"{page.name}: " + "; ".join(problems)


def test_tutorial_quotes_commands():
    text = TUTORIAL.read_text()
    assert {"simulate", "info", "correlators", "run", "superres", "generate"} <= {a[0] for a in skild_commands(text, inline=False)}
    assert "train" in {a[0] for a in skild_commands(text)}


def _reduced(args: list[str]) -> list[str]:
    """The command at test size: --samples capped, workflows only planned, repository paths made absolute."""
    out = list(args)
    for i, token in enumerate(out[:-1]):
        if token == "--samples":
            out[i + 1] = str(min(int(out[i + 1]), MAX_SAMPLES))
    out = [str(ROOT / t) if t.startswith("workflows/") else t for t in out]
    if out[0] == "run" and "--dry-run" not in out:
        out.append("--dry-run")
    return out


def _inputs_exist(args: list[str]) -> bool:
    """False when a store the command reads was made by a stage the test does not run."""
    reads = [t for t in args[1:] if t.endswith(".zarr") and not t.startswith("-")]
    writes = {args[i + 1] for i, t in enumerate(args[:-1]) if t == "--out"}
    return all(Path(t).exists() for t in reads if t not in writes)


def test_tutorial_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = []
    for args in skild_commands(TUTORIAL.read_text(), inline=False):
        if args[0] not in RUN_IN_TEST:
            continue
        args = _reduced(args)
        if not _inputs_exist(args):
            continue
        if args[0] in ("simulate", "correlators") and "--quiet" not in args:
            args.append("--quiet")
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, f"skild-phys {shlex.join(args)} failed:\n{result.output}"
        ran.append(args[0])
    assert {"simulate", "info", "correlators", "run"} <= set(ran)
