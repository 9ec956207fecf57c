"""The bf16 autocast path (`--precision bf16`) runs on CPU and stays close to fp32; the process stays float64."""

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from skild_phys.cli import main
from skild_phys.methods.skild import load_model
from skild_phys.networks.precision import AutocastNet, accelerate

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# bf16 keeps 8 significant bits (relative spacing 2^-8 = 0.4 %); through a small U-Net the
# network output differs from fp32 by about that per layer, a few per cent at most
BF16_REL_TOL = 0.05


@pytest.fixture(scope="module")
def run(tiny_run16):
    return tiny_run16


def test_autocast_network_is_close_to_fp32(run):
    net = load_model(run[0], "cpu").net  # trained weights (a fresh U-Net's output layer starts at zero)
    x, n = torch.randn(4, 1, 16, 16), torch.tensor([1, 100, 500, 1000])
    with torch.no_grad():
        ref = net(x, n)
        out = accelerate(net, torch.device("cpu"), "bf16")(x, n)
    assert out.dtype == torch.float32
    rel = float(torch.linalg.norm(out - ref) / torch.linalg.norm(ref))
    assert 0 < rel < BF16_REL_TOL, rel  # > 0: the bf16 path really ran


def test_bf16_sampling_keeps_the_chain_in_float64_and_close_to_fp32(run):
    path, _ = run
    fp32, bf16 = load_model(path, "cpu"), load_model(path, "cpu", precision="bf16")
    assert isinstance(bf16.net, AutocastNet) and bf16.process.lam.dtype == torch.float64
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    n = torch.tensor([50, 300, 600])
    a, b = fp32.eps_hat(x, n), bf16.eps_hat(x, n)
    assert b.dtype == torch.float64  # the noise estimate returns in the chain's dtype
    assert float(torch.linalg.norm(b - a) / torch.linalg.norm(a)) < BF16_REL_TOL


def test_bf16_training_and_superres_run(tmp_path, run):
    path, data = run
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        r = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(out), "--net", "tiny", "--steps", "3",
                                      "--batch", "8", "--log-every", "1", "--quiet", "--device", "cpu",
                                      "--precision", precision])
        assert r.exit_code == 0, r.output
        from skild_phys.checkpoint import read_log

        losses[precision] = [rec["loss"] for rec in read_log(out) if "loss" in rec]
    assert np.all(np.isfinite(losses["bf16"]))
    # the first step sees the same batch and weights: only the network arithmetic differs
    assert abs(losses["bf16"][0] - losses["fp32"][0]) < BF16_REL_TOL * losses["fp32"][0]
    r = CliRunner().invoke(main, ["superres", "--checkpoint", str(path), "--data", str(data), "--factor", "4",
                                  "--samples", "2", "--steps", "3", "--precision", "bf16", "--out",
                                  str(tmp_path / "sr.zarr"), "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert set(np.unique(xr.open_zarr(tmp_path / "sr.zarr").spins.values)) <= {-1, 1}
