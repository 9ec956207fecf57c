"""`skild-phys run` (workflows) and `skild-phys report`."""

from __future__ import annotations

import click


def parse_vars(pairs) -> dict:
    """--var NAME=VALUE pairs as a dict; values parse as TOML (numbers, booleans), else strings."""
    import tomllib

    from skild_base.errors import InputError

    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--var needs NAME=VALUE, got {pair!r}")
        try:
            out[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text  # a bare word is a string
    return out


@click.command("run")
@click.argument("workflow_file", metavar="WORKFLOW.toml", type=click.Path())
@click.option("--dry-run", is_flag=True, help="Print the plan (status and command of every stage) and stop.")
@click.option("--force", multiple=True, metavar="STAGE", help="Rerun this stage (and the stages that read it).")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Override a [vars] entry.")
def run_workflow(workflow_file, dry_run, force, variables):
    """Run a declarative workflow: each stage a skild-phys command; finished stages are skipped,
    interrupted ones resumed."""
    from skild_phys import workflow
    from skild_phys.reports.report import make_report

    wf = workflow.load(workflow_file, parse_vars(variables))
    records = workflow.execute(wf, set(force), dry_run=dry_run, echo=click.echo)
    if not dry_run and records and not any(s.run == "report" for s in wf.stages):
        click.echo(f"report: {make_report(wf.out, wf.name)}")


@click.command()
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path())
@click.option("--title", default=None, help="Report title [default: the directory name].")
def report(run_dir, title):
    """(Re)generate RUN_DIR/report.md from a workflow run's records and correlator outputs."""
    from skild_phys.reports.report import make_report

    click.echo(f"wrote {make_report(run_dir, title)}")


COMMANDS = [run_workflow, report]
