"""Fixed-seed outputs of the whole pipeline are byte-identical to the recorded ones.

The digests in tests/golden_digests.json were recorded with `python -m tests.golden --write`
before the package was restructured; any change that alters a stored spin, a trained weight,
a generated pixel or a correlator value fails here (a deliberate change of results re-records
them, and says so in its commit).
"""

import json
import platform

import torch

from tests import golden


def test_pipeline_outputs_match_recorded_digests(tmp_path):
    recorded = json.loads(golden.DIGESTS.read_text())
    env = recorded.pop("_environment")
    digests = golden.compute(tmp_path)
    assert set(digests) == set(recorded)
    changed = sorted(name for name in digests if digests[name] != recorded[name])
    here = {"torch": torch.__version__, "machine": platform.machine()}
    assert not changed, f"outputs changed: {changed} (recorded with {env}, running with {here})"
