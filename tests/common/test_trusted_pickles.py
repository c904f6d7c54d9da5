"""Only the loads that need it may unpickle: mdmonitor leaves torch's weights-only default, the
environment and the warning filters of the program that uses it as they were."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from ase.build import bulk

from mdmonitor.common.trusted_pickles import FLAG, trusted_pickle_loads
from tests.pickled_code import save_code_pickle

# Run in a fresh interpreter: import `first`, use a committee and an LLPR estimator from the
# bundled model files, then torch.load a pickle of code with torch's default weights_only.
PROGRAM = """
import json, os, pickle, sys, warnings
import torch
from ase.build import bulk  # torch, ase and scipy add warning filters of their own
first, code = sys.argv[1:]
warnings.filterwarnings("error", message="a filter of the user's own")
filters = [str(f) for f in warnings.filters]
import mdmonitor
flag_after_import = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "unset")
mace_after_import = "mace" in sys.modules
__import__(first)
from mdmonitor import Committee, demo_models
from mdmonitor.estimators.fitted import load_fitted
models = demo_models()
atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
energies = [Committee.from_mace(models["committee"]).predict(atoms).energy,
            load_fitted("llpr", models["llpr"]).predict(atoms).energy]
try:
    torch.load(code)
    refused = False
except pickle.UnpicklingError:
    refused = True
print(json.dumps({
    "flag_after_import": flag_after_import, "mace_after_import": mace_after_import,
    "flag_after_use": os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "unset"),
    "filters_kept": [str(f) for f in warnings.filters] == filters, "energies": energies,
    "refused": refused, "e3nn_imported": "e3nn.o3" in sys.modules}))
"""


def run_program(first: str, code, user_flag: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != FLAG}
    if user_flag is not None:
        env[FLAG] = user_flag
    done = subprocess.run([sys.executable, "-c", PROGRAM, first, str(code)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("first, user_flag", [
    ("mdmonitor", None),
    ("mdmonitor.estimators.latent", "0"),  # imports e3nn before anything else of mace
    ("mdmonitor.lammps.export", None),
])
def test_using_mdmonitor_leaves_torch_load_safe_and_the_environment_as_it_was(
        tmp_path, committee, llpr, first, user_flag):
    marker = tmp_path / "code-ran"
    code = save_code_pickle(tmp_path / "code.pt", marker)
    result = run_program(first, code, user_flag)
    expected_flag = "unset" if user_flag is None else user_flag
    assert result["flag_after_import"] == expected_flag
    assert result["mace_after_import"] is False  # `import mdmonitor` stays cheap
    assert result["e3nn_imported"] is True
    assert result["flag_after_use"] == expected_flag  # also undoes `import mace`'s own setting
    assert result["filters_kept"] is True
    assert result["refused"] is True and not marker.exists()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    assert result["energies"] == pytest.approx(
        [committee.predict(atoms).energy, llpr.predict(atoms).energy], rel=1e-12)


@pytest.mark.filterwarnings("error")
def test_torch_reads_the_flag_at_each_load_so_the_scope_alone_unpickles(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv(FLAG, "0")  # a user's own setting
    code = save_code_pickle(tmp_path / "code.pt", tmp_path / "code-ran")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(code)
    assert not (tmp_path / "code-ran").exists()
    with trusted_pickle_loads():
        torch.load(code)  # torch's warning about the flag is silenced in the scope
    assert (tmp_path / "code-ran").exists()
    assert os.environ[FLAG] == "0"
    (tmp_path / "code-ran").rmdir()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(code)
    assert not (tmp_path / "code-ran").exists()
    monkeypatch.delenv(FLAG)
    with trusted_pickle_loads():
        pass
    assert FLAG not in os.environ
