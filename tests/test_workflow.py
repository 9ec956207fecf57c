"""Workflows: the quickstart end to end at tiny scale, skipping and forcing stages, and every
shipped workflow's commands parse."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from skild_base.errors import InputError
from skild_phys import workflow
from skild_phys.cli import main

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.toml"))
TINY = ["L=8", "train_samples=400", "test_samples=200", "sr_samples=24", "steps=20", "sample_steps=4"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    cwd = os.getcwd()
    work = tmp_path_factory.mktemp("quickstart")
    os.chdir(work)
    try:
        args = ["run", ROOT / "workflows/quickstart.toml"] + sum((["--var", v] for v in TINY), [])
        result = _run(*args)
        assert result.exit_code == 0, result.output
        yield work / "runs/quickstart", args
    finally:
        os.chdir(cwd)


def test_quickstart_stage_outputs(quickstart):
    out, _ = quickstart
    train, test = xr.open_zarr(out / "data/train.zarr"), xr.open_zarr(out / "data/test.zarr")
    assert train.sizes["sample"] == 400 and test.sizes["sample"] == 200 and train.attrs["L"] == 8
    assert train.attrs["seed"] != test.attrs["seed"]  # held-out data come from another seed
    for run, model in (("skild", "skild"), ("sr3", "sr3")):
        config = json.loads((out / run / "config.json").read_text())
        assert config["model"] == model and config["train"]["steps"] == 20
        assert (out / run / "model.pt").is_file() and (out / run / "resume.pt").is_file()
    for name in ("skild_sr", "sr3_sr"):
        sr = xr.open_zarr(out / f"{name}.zarr")
        assert sr.spins.shape == (24, 8, 8) and sr.attrs["complete"]
        np.testing.assert_array_equal(sr.source_index.values, np.arange(24))
        assert sr.attrs["source"].endswith("data/test.zarr")
    ds = xr.load_dataset(out / "kappa4.nc")
    assert list(ds.source.values) == ["truth", "SKILD", "SR3"]
    assert np.isfinite(ds.kappa4.values).all() and (out / "kappa4.png").stat().st_size > 10_000
    # both super-resolved stores record their truth configurations: paired comparisons
    assert np.isfinite(ds.kappa4_paired.sel(source=["SKILD", "SR3"]).values).all()
    report = (out / "report.md").read_text()
    assert "| ℓ |" in report and "kappa4.png" in report and "skild-phys train" in report
    assert "; paired " in report and "| 2α |" in report
    records = [json.loads(p.read_text()) for p in (out / workflow.RECORD_DIR).glob("*.json")]
    assert len(records) == 8 and all(r["finished"] for r in records)


def test_demo_evaluates_a_checkpoint_on_fresh_configurations(quickstart, capsys, monkeypatch, tmp_path):
    from skild_phys import demo

    out, _ = quickstart
    monkeypatch.chdir(tmp_path)
    tiny = ["checkpoint=" + str(out / "skild"), "L=8", "truth_samples=200", "sr_samples=24", "gen_samples=12",
            "steps=4"]
    assert demo.main(sum((["--var", v] for v in tiny), [])) == 0
    printed = capsys.readouterr().out
    assert "κ4" in printed and "U4" in printed and "gaussian" in printed
    truth = xr.open_zarr(tmp_path / "demo-output/truth.zarr")
    training_seeds = {xr.open_zarr(out / f"data/{s}.zarr").attrs["seed"] for s in ("train", "test")}
    assert truth.attrs["seed"] not in training_seeds  # configurations the checkpoint never saw
    ds = xr.load_dataset(tmp_path / "demo-output/evaluation/fidelity.nc")
    assert np.isfinite(ds.kappa4_paired.sel(source="model/marginal").values).all()
    assert demo.main(["--var", "no_equals_sign"]) == 2


def test_rerun_skips_finished_stages_and_force_reruns_dependents(quickstart, monkeypatch):
    out, args = quickstart
    monkeypatch.chdir(out.parent.parent)
    result = _run(*args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("[     done]") == 8
    result = _run(*args, "--dry-run", "--force", "sr3")
    lines = {line.split("]")[1].split(":")[0].strip(): line for line in result.output.splitlines() if "] " in line}
    for stage in ("sr3", "sr3_sr", "correlators", "report"):
        assert "[     done]" not in lines[stage], lines[stage]
    for stage in ("truth_train", "truth_test", "skild", "skild_sr"):
        assert "[     done]" in lines[stage]
    # changing a variable invalidates exactly the stages that depend on it
    result = _run(*args, "--var", "sample_steps=5", "--dry-run")
    assert "[overwrite] skild_sr" in result.output and "[     done] skild:" in result.output


def test_stage_status_rules(tmp_path):
    toml = tmp_path / "w.toml"
    toml.write_text(f'[workflow]\nout = "{tmp_path}/o"\n[vars]\nn = 3\n'
                    '[[stages]]\nname = "a"\nrun = "simulate"\nargs = { L = "{n}", out = "{out}/a.zarr" }\n'
                    '[[stages]]\nname = "b"\nrun = "train"\nargs = { data = "{a}", out = "{out}/b" }\n')
    wf = workflow.load(toml)
    a, b = wf.stages
    assert a.args["L"] == 3 and b.deps == ["a"] and b.args["data"] == f"{tmp_path}/o/a.zarr"
    assert wf.status(a) == "new"
    (tmp_path / "o" / workflow.RECORD_DIR).mkdir(parents=True)
    (tmp_path / "o/a.zarr").mkdir()
    (tmp_path / "o/b").mkdir()
    with pytest.raises(InputError, match="this workflow did not write it"):
        wf.status(a)  # an output without any record of this stage is not the workflow's to replace
    wf.record_path(a).write_text(json.dumps({"hash": "stale", "finished": 1.0}))
    assert wf.status(a) == "overwrite"  # the stage's own output from other settings
    wf.record_path(a).write_text(json.dumps({"hash": a.digest, "finished": None}))
    wf.record_path(b).write_text(json.dumps({"hash": b.digest, "finished": None}))
    assert wf.status(a) == "resume"
    assert workflow.command_line(a, "resume")[-1] != "--overwrite"  # simulate resumes by itself
    assert workflow.command_line(b, "resume")[-1] == "--resume"
    wf.record_path(a).write_text(json.dumps({"hash": a.digest, "finished": 1.0}))
    assert wf.status(a) == "done"
    assert workflow.load(toml, {"n": 4}).stages[1].digest != b.digest  # upstream change propagates


def test_a_replaced_checkpoint_reruns_the_stages_that_read_it(tmp_path, quickstart):
    """A checkpoint the workflow reads but did not make (models/...) is part of its readers' hashes: the
    same path with other weights is not `done`; a stage that reads no such checkpoint keeps its hash."""
    import shutil

    out, _ = quickstart
    ckpt = tmp_path / "ckpt"
    shutil.copytree(out / "skild", ckpt)
    toml = tmp_path / "w.toml"
    toml.write_text(f'[workflow]\nout = "{tmp_path}/o"\n[vars]\nc = "{ckpt}"\n'
                    '[[stages]]\nname = "a"\nrun = "simulate"\nargs = { L = 8, out = "{out}/a.zarr" }\n'
                    '[[stages]]\nname = "g"\nrun = "generate"\nargs = { checkpoint = "{c}", out = "{out}/g.zarr" }\n'
                    '[[stages]]\nname = "t"\nrun = "train"\nargs = { data = "{a}", out = "{out}/t" }\n'
                    '[[stages]]\nname = "s"\nrun = "superres"\nargs = { checkpoint = "{t}", data = "{a}", '
                    'out = "{out}/s.zarr" }\n')
    before = {s.name: s.digest for s in workflow.load(toml).stages}
    ckpt_file = ckpt / "model.pt"
    ckpt_file.write_bytes(ckpt_file.read_bytes() + b"\0")  # other bytes under the same path
    after = {s.name: s.digest for s in workflow.load(toml).stages}
    assert after["g"] != before["g"]
    assert after["a"] == before["a"] and after["t"] == before["t"]
    assert after["s"] == before["s"]  # its checkpoint is a stage's output: that stage's hash covers it


def test_bad_workflows_are_one_sentence(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[workflow]\nout = "x"\n[[stages]]\nname = "a"\nrun = "simulate"\nargs = { out = "{nope}" }\n')
    result = _run("run", bad)
    assert result.exit_code == 2 and "unknown placeholder" in result.output
    result = _run("run", ROOT / "workflows/quickstart.toml", "--var", "nope=1", "--dry-run")
    assert result.exit_code == 2 and "no variable" in result.output
    assert _run("run", tmp_path / "missing.toml").exit_code == 2


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_commands_parse(path):
    wf = workflow.load(path)
    assert wf.stages[-1].run in ("report", "evaluate")  # every workflow ends in its summary table
    with main.make_context("skild-phys", [wf.stages[0].run], resilient_parsing=True) as parent:
        for stage in wf.stages:
            command = main.get_command(parent, stage.run)
            assert command is not None, stage.run
            # a child of the group's context, as the CLI parses it; raises on unknown options
            command.make_context(stage.run, stage.argv(), parent=parent, resilient_parsing=False)


def test_paper_workflow_dry_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("run", ROOT / "workflows/ising128_paper.toml", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("[      new]") == 8
    assert "--preset ising128_4x" in result.output and "--L 128" in result.output and "--net base" in result.output
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
