"""fix mdmonitor with one threshold per atom type (`threshold T1,T2`), as a per-element
calibration map gives them (`Calibration.lammps_threshold`): the count above and the extracted
box follow each type's own limit."""

import numpy as np
import pytest

from mdmonitor import Calibration
from mdmonitor.demo import demo_slab
from mdmonitor.lammps.plugin import build
from mdmonitor.quality.error_maps import ErrorMap, Term
from tests.lammps_support import (
    exported,
    read_dump,
    read_thermo,
    run_lammps,
    write_data,
)


@pytest.fixture(scope="module", autouse=True)
def plugin():
    return build()


def run_with(directory, threshold: str, check: bool = True):
    """run 0 on the demo slab, atoms with ID > 48 as type 2 (also Cu), LLPR source."""
    write_data(demo_slab(), directory / "slab.data")
    script = f"""units metal
atom_style atomic
read_data slab.data extra/atom/types 1
mass 2 63.546
group upper id > 48
set group upper type 2
pair_style mdmonitor {exported("llpr")}
pair_coeff * * Cu Cu
fix mon all mdmonitor 1 cutoff 4.0 threshold {threshold}
dump d all custom 1 atoms.dump id type f_mon[2]
dump_modify d sort id format float %.17g
thermo_style custom step f_mon[3]
run 0
"""
    return run_lammps(script, directory, check=check)


def test_each_type_is_counted_against_its_own_threshold(tmp_path):
    run_with(tmp_path, "1e9")
    frame = read_dump(tmp_path / "atoms.dump")[0]
    local, types = frame["f_mon[2]"], frame["type"].astype(int)
    # type 1 limited at its median local value, type 2 above every value of it
    limits = {1: float(np.median(local[types == 1])), 2: float(local.max()) * 2}
    run_with(tmp_path, f"{limits[1]!r},{limits[2]!r}")
    expected = int(np.sum(local > np.array([limits[t] for t in types])))
    assert expected == int(np.sum(local[types == 1] > limits[1])) > 0
    assert read_thermo(tmp_path)[0]["f_mon[3]"] == expected
    # with the limits swapped only type 2 atoms can count
    run_with(tmp_path, f"{limits[2]!r},{limits[1]!r}")
    assert read_thermo(tmp_path)[0]["f_mon[3]"] == int(np.sum(
        local[types == 2] > limits[1]))


def test_a_wrong_number_of_thresholds_is_refused(tmp_path):
    done = run_with(tmp_path, "0.1,0.2,0.3", check=False)
    assert done.returncode != 0
    assert "threshold 0.1,0.2,0.3 gives 3 values; give one, or one per atom type (2 types)" in (
        done.stdout + done.stderr)


def test_a_per_element_calibration_gives_the_per_type_argument(llpr):
    from mdmonitor.quality.calibration import estimator_identity

    map_ = ErrorMap("element-power", ("llpr",), (0.0,), Term(1.0, (1.0,)),
                    {29: Term(0.5, (2.0,))}).to_dict()
    calibration = Calibration(alpha=1.0, cutoff=4.0, estimator=estimator_identity(llpr),
                              n_frames=3, n_atoms=88, mean_error=0.1, mean_uncertainty=0.1,
                              fitted="now", error_map=map_)
    # Cu: 0.5 u^2 = 0.08 at u = 0.4; Au (no term): the pooled 1.0 u = 0.08 at 0.08
    assert calibration.lammps_threshold(0.08, ["Cu", "Au", "Cu"]) == "0.4,0.08,0.4"
    alpha = Calibration(alpha=2.0, cutoff=4.0, estimator=estimator_identity(llpr), n_frames=3,
                        n_atoms=88, mean_error=0.2, mean_uncertainty=0.1, fitted="now")
    assert alpha.lammps_threshold(0.1, ["Cu"]) == "0.05"
