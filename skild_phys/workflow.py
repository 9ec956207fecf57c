"""Declarative pipelines: TOML files whose stages are `skild-phys` commands, run in order.

    [workflow]  name, out (output directory), description
    [vars]      values substituted into stage arguments as {name}; overridable from the CLI
    [[stages]]  name, run (a skild-phys command), args (option -> value; "_" for positionals),
                after (optional: earlier stages it reads without naming their output)

In argument strings, {out} is the workflow's output directory, {VAR} a variable and
{STAGE} the `out` argument of an earlier stage, which makes that stage a dependency.  A
stage is skipped when its record shows it finished with the same content hash (its
command, resolved arguments, the hashes of the stages it reads and the digest of every
checkpoint it reads that no stage made, so a replaced `models/` checkpoint reruns what used
it); a stage interrupted with the same hash is resumed; a stale one is rerun with --overwrite.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from skild_base import outputs
from skild_base.errors import InputError
from skild_phys import checkpoint

RECORD_DIR = ".workflow"
RESUMES_ITSELF = {"simulate", "generate", "superres", "evaluate"}  # rerunning the same command continues them
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def option_argv(args: dict) -> list[str]:
    """--key value options of a command line: lists repeat the option, True is a bare flag, False/None absent."""
    argv = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


@dataclass
class Stage:
    """One resolved stage: its command line, its output and the stages it reads."""

    name: str
    run: str
    args: dict
    deps: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def out(self) -> str | None:
        return self.args.get("out")

    def argv(self) -> list[str]:
        """The command line after `skild-phys RUN`."""
        return [str(v) for v in self.args.get("_", [])] + option_argv(
            {k: v for k, v in self.args.items() if k != "_"})


@dataclass
class Workflow:
    """A parsed workflow: name, output directory and stages in order."""

    name: str
    out: Path
    description: str
    stages: list[Stage]

    def record_path(self, stage: Stage) -> Path:
        return self.out / RECORD_DIR / f"{stage.name}.json"

    def record(self, stage: Stage) -> dict | None:
        p = self.record_path(stage)
        return json.loads(p.read_text()) if p.is_file() else None

    def status(self, stage: Stage) -> str:
        """done, resume, overwrite (a stale output of this stage) or new.

        An output path that holds data this workflow did not write (no record of the stage)
        is refused: a workflow replaces only what it made.
        """
        rec = self.record(stage)
        exists = stage.out is not None and Path(stage.out).exists()
        if exists and rec is None:
            raise InputError(f"stage {stage.name}: {stage.out} already exists and this workflow did not write it; "
                             "move it away or change the stage's out")
        if rec is not None and rec["hash"] == stage.digest:
            if rec.get("finished") and (stage.out is None or exists):
                return "done"
            return "resume" if exists else "new"
        return "overwrite" if exists else "new"


def _checkpoint_digests(args: dict, written: list) -> dict[str, str]:
    """{path: digest} of the run directories (a directory holding a model.pt) among a stage's arguments
    that no stage of the workflow writes (`written`: the outputs of the earlier stages and its own): their
    content, not only their path, decides the stage's result."""
    made = [Path(o) for o in written if isinstance(o, str) and o]
    found = {}
    for value in args.values():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or not item:
                continue
            path = Path(item)
            if any(path == m or m in path.parents for m in made) or not (path / checkpoint.USE_FILE).is_file():
                continue
            found[item] = checkpoint.file_digest(path)
    return found


def _substitute(value, names: dict, stage_outs: dict, deps: list):
    """Replace {name} placeholders; a string that is one placeholder keeps the value's type."""
    if isinstance(value, list):
        return [_substitute(v, names, stage_outs, deps) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(key):
        if key in stage_outs:
            if key not in deps:
                deps.append(key)
            return stage_outs[key]
        if key in names:
            return names[key]
        raise InputError(f"unknown placeholder {{{key}}} (not a variable or an earlier stage with an out; "
                         f"variables: {', '.join(sorted(names)) or 'none'})")

    whole = PLACEHOLDER.fullmatch(value)
    if whole:
        return lookup(whole.group(1))
    return PLACEHOLDER.sub(lambda m: str(lookup(m.group(1))), value)


def load(path, overrides: dict | None = None) -> Workflow:
    """Parse and resolve a workflow file; `overrides` replace [vars] entries (values parsed as TOML)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"workflow file {p} does not exist")
    try:
        spec = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{p} is not valid TOML: {err}") from None
    meta = spec.get("workflow", {})
    if "out" not in meta or not spec.get("stages"):
        raise InputError(f"{p} needs a [workflow] table with `out` and at least one [[stages]] entry")
    variables = dict(spec.get("vars", {}))
    for key, value in (overrides or {}).items():
        if key not in variables:
            raise InputError(f"--var {key}: the workflow has no variable {key!r} (has: {', '.join(variables)})")
        variables[key] = value
    out = Path(str(_substitute(str(meta["out"]), variables, {}, [])))
    names = {**variables, "out": str(out)}
    stages, outs, digests = [], {}, {}
    for raw in spec["stages"]:
        name, run = raw.get("name"), raw.get("run")
        if not name or not run:
            raise InputError(f"{p}: every stage needs a name and a run command")
        if name in outs or name in names:
            raise InputError(f"{p}: stage name {name!r} is used twice or shadows a variable")
        deps: list[str] = []
        for earlier in raw.get("after", []):  # ordering-only dependencies
            if earlier not in digests:
                raise InputError(f"{p}: stage {name!r} comes after unknown stage {earlier!r}")
            deps.append(earlier)
        args = {k: _substitute(v, names, outs, deps) for k, v in raw.get("args", {}).items()}
        stage = Stage(name, run, args, deps)
        identity = {"run": run, "args": args, "deps": [digests[d] for d in deps]}
        checkpoints = _checkpoint_digests(args, [*outs.values(), args.get("out")])
        if checkpoints:  # left out when empty: the hashes of stages that read none stay what they were
            identity["checkpoints"] = checkpoints
        content = json.dumps(identity, sort_keys=True)
        stage.digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        digests[name] = stage.digest
        if stage.out is not None:
            outs[name] = stage.out
        stages.append(stage)
    return Workflow(meta.get("name", p.stem), out, meta.get("description", ""), stages)


def command_line(stage: Stage, status: str) -> list[str]:
    """The argv that brings the stage from its status to done."""
    argv = ["skild-phys", stage.run] + stage.argv()
    if status == "overwrite" or (status == "resume" and stage.run not in RESUMES_ITSELF | {"train"}):
        argv.append("--overwrite")
    elif status == "resume" and stage.run == "train":
        argv.append("--resume")
    return argv


def plan(wf: Workflow, force: set[str]) -> list[tuple[Stage, str]]:
    """(stage, status) for every stage; forced stages and everything reading them are rerun."""
    unknown = force - {s.name for s in wf.stages}
    if unknown:
        raise InputError(f"--force: no stage named {', '.join(sorted(unknown))}")
    rerun: set[str] = set()
    out = []
    for stage in wf.stages:
        status = wf.status(stage)
        if stage.name in force or rerun & set(stage.deps):
            status = "overwrite" if stage.out and Path(stage.out).exists() else "new"
        if status != "done":
            rerun.add(stage.name)
        out.append((stage, status))
    return out


def execute(wf: Workflow, force: set[str] = frozenset(), dry_run: bool = False, echo=print) -> list[dict]:
    """Run the plan; returns the records of all stages (done before or now)."""
    steps = plan(wf, set(force))
    echo(f"workflow {wf.name}: {len(steps)} stages, outputs under {wf.out}")
    for stage, status in steps:
        echo(f"  [{status:>9}] {stage.name}: {shlex.join(command_line(stage, status))}")
    if dry_run:
        return []
    (wf.out / RECORD_DIR).mkdir(parents=True, exist_ok=True)
    with outputs.lock(wf.out / RECORD_DIR, "workflow output"):  # one runner per workflow output at a time
        return _run_stages(wf, steps, echo)


def _run_stages(wf: Workflow, steps: list[tuple[Stage, str]], echo) -> list[dict]:
    records = []
    for stage, status in steps:
        if status == "done":
            records.append(wf.record(stage))
            continue
        argv = command_line(stage, status)
        echo(f"\n== {stage.name}: {shlex.join(argv)}")
        rec = {"stage": stage.name, "run": stage.run, "hash": stage.digest, "command": shlex.join(argv),
               "args": stage.args, "out": stage.out, "started": time.time(), "finished": None,
               "resumed": status == "resume"}
        _write_record(wf.record_path(stage), rec)
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "skild_phys"] + argv[1:])
        if result.returncode != 0:
            raise InputError(f"stage {stage.name} failed (exit code {result.returncode}); fix it and rerun the "
                             "workflow to continue from there")
        rec.update(finished=time.time(), wall_s=time.perf_counter() - t0)  # of this (last) invocation
        _write_record(wf.record_path(stage), rec)
        records.append(rec)
    return records


def _write_record(path: Path, rec: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
