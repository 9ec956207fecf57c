"""The lattice-model description (ising/model.py) against site-by-site definitions."""

import numpy as np
import pytest

from ising.model import ISING, get_model
from skild_base.errors import InputError


def _energy_by_bonds(s):
    L0, L1 = s.shape
    return -sum(int(s[i, j]) * (int(s[(i + 1) % L0, j]) + int(s[i, (j + 1) % L1]))
                for i in range(L0) for j in range(L1)) / (L0 * L1)


def test_ising_description_matches_the_site_by_site_definitions():
    rng = np.random.default_rng(0)
    states = ISING.random_states(rng, (5, 4, 6))
    assert states.dtype == np.int8 and set(np.unique(states)) == {-1, 1} and ISING.valid(states).all()
    obs = ISING.observables(states, J=1.0)
    np.testing.assert_allclose(obs["energy"], [_energy_by_bonds(s) for s in states], atol=1e-12)
    np.testing.assert_allclose(obs["magnetization"], [s.sum() / s.size for s in states], atol=1e-12)
    field = np.array([[-2.0, -1e-300, -0.0, 0.0, 1e-300, 3.0, np.nan]])[None]
    assert ISING.project(field).tolist() == [[[-1, -1, 1, 1, 1, 1, -1]]]  # x >= 0 -> +1, else (NaN too) -1
    bad = states.copy()
    bad[2, 1, 1] = 0
    assert ISING.valid(bad).tolist() == [True, True, False, True, True]
    assert get_model("ising2d") is ISING
    with pytest.raises(InputError, match="unknown lattice model"):
        get_model("potts3")


def test_shipped_checkpoint_is_trains_lattice_default():
    """models/ising32_4x loads without running code and was trained with train's defaults for lattice
    stores (basis, S0, learning-rate decay, EMA, loss weight, steps), so what users get by default is what it documents."""
    from pathlib import Path

    from skild_phys.methods import default_variance, load_trained
    from skild_phys.methods.skild import DATA_DEFAULTS

    model = load_trained(Path(__file__).parents[1] / "models" / "ising32_4x", "cpu")
    config, defaults = model.config, DATA_DEFAULTS["lattice"]
    assert (config.data_kind, config.H, config.factor, config.model) == ("spins", 32, 4, "skild")
    assert (config.basis, config.spectrum["mode"]) == (defaults["basis"], defaults["spectrum"])
    assert config.train["lr_decay"] == defaults["lr_decay"] and config.train["ema_decay"] == defaults["ema_decay"]
    assert config.train["loss_weight"] == defaults["loss_weight"] and config.train["steps"] == defaults["steps"]
    assert default_variance(config) == "forward" and default_variance(config, generate=True) == "split"
