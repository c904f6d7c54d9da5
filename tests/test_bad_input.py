"""Bad input to the monitor and the MD is refused where it enters, naming it: NaN or inf
positions, cell or velocities, degenerate cells, MD settings out of range, a cutoff too small to
hold even the atom itself. Before, NaN positions and zero cells hung MACE's neighbour search."""

import subprocess
import sys

import numpy as np
import pytest

from mdmonitor import MonitoredCalculator, aggregate
from mdmonitor.aggregation import MIN_CUTOFF
from mdmonitor.md import run_md


def spoil_position(atoms):
    atoms.positions[3, 1] = np.nan


def spoil_momenta(atoms):
    momenta = np.zeros((len(atoms), 3))
    momenta[5] = [0.0, np.inf, 0.0]
    atoms.set_momenta(momenta)


@pytest.mark.parametrize("spoil, message", [
    (spoil_position, r"positions must be finite, but atom 3 has \[.* nan"),
    (spoil_momenta, r"momenta \(velocities\) must be finite, but atom 5 has \[.* inf"),
])
def test_the_monitor_refuses_non_finite_atoms_before_any_model_call(llpr, cu_bulk, spoil,
                                                                    message):
    spoil(cu_bulk)
    cu_bulk.calc = MonitoredCalculator(llpr, cutoff=4.0)
    with pytest.raises(ValueError, match="the atoms at force call 0: " + message):
        cu_bulk.get_forces()


# Each case hung MACE's neighbour search for minutes (Ctrl-C ignored): a subprocess with a
# time limit, so that the test fails instead of hanging where the check is missing.
DEGENERATE_CELLS = """
import numpy as np
import torch
from ase.build import bulk
import mdmonitor

torch.set_num_threads(1)
llpr = mdmonitor.LastLayerLPR.load(mdmonitor.demo_models()["llpr"])
for case in ("zero", "equal", "nan"):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    if case == "zero":
        atoms.cell[:] = 0.0
    elif case == "equal":
        atoms.cell[1] = atoms.cell[0]
    else:
        atoms.cell[2, 2] = np.nan
    atoms.calc = mdmonitor.MonitoredCalculator(llpr, cutoff=4.0)
    try:
        atoms.get_forces()
        print(case, "accepted")
    except ValueError as err:
        print(case, err)
"""


def test_degenerate_or_non_finite_cells_are_refused_at_once():
    done = subprocess.run([sys.executable, "-c", DEGENERATE_CELLS], capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    for case in ("zero", "equal"):
        assert lines[case].startswith("the atoms at force call 0: cell is degenerate along the "
                                      "periodic axes [0, 1, 2]")
    assert lines["nan"].startswith("the atoms at force call 0: cell must be finite, but cell "
                                   "vector 2 has")


@pytest.mark.parametrize("setting, value, message", [
    ("steps", -5, "steps must be a non-negative integer, got -5"),
    ("steps", 2.5, "steps must be a non-negative integer, got 2.5"),
    ("temperature_K", -300.0, "temperature_K must be a non-negative temperature in K"),
    ("temperature_K", float("nan"), "temperature_K must be a non-negative temperature in K"),
    ("timestep_fs", 0.0, "timestep_fs must be a positive time step in fs"),
    ("friction", float("inf"), "friction must be a non-negative friction in 1/fs"),
    ("frame_interval", 0, "frame_interval must be a positive integer"),
    ("seed", -1, "seed must be a non-negative integer"),
])
def test_run_md_refuses_settings_out_of_range_before_the_first_step(llpr, cu_bulk, setting,
                                                                    value, message):
    calc = MonitoredCalculator(llpr, cutoff=4.0)
    settings = {"steps": 0, "temperature_K": 300.0, "progress": False}  # steps 0: no NaN MD
    with pytest.raises(ValueError, match=message):
        run_md(cu_bulk, calc, **{**settings, setting: value})
    assert calc.step == 0  # no force call


@pytest.mark.parametrize("cutoff", [1e-200, 0.5 * MIN_CUTOFF])
def test_a_cutoff_too_small_to_hold_the_atom_itself_is_refused(llpr, cu_bulk, cutoff):
    """Its square underflowed: no atom, not even itself, was within it, and every local value
    was NaN (0 / 0), so no threshold could ever fire."""
    with pytest.raises(ValueError, match="cutoff must be at least 1e-06 A"):
        MonitoredCalculator(llpr, cutoff=cutoff)
    with pytest.raises(ValueError, match="cutoff must be at least 1e-06 A"):
        aggregate(cu_bulk, np.ones(len(cu_bulk)), cutoff)
    np.testing.assert_array_equal(aggregate(cu_bulk, np.arange(32.0), MIN_CUTOFF),
                                  np.arange(32.0))
