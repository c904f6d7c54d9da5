"""Extractor: centres, cool-down, queue files written atomically, restarts, relaxation modes."""

import os
import shutil

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.constraints import FixBondLengths

from mdmonitor import LastLayerLPR, MonitoredCalculator
from mdmonitor.extraction.box_quality import (QualityLimits, assess, changed_molecules,
                                              hydrogen_partners)
from mdmonitor.extraction.candidates import CandidateQueue, box_name
from mdmonitor.extraction.centres import choose_centres
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.extraction import relaxation
from mdmonitor.extraction.cutting import cut_cube
from mdmonitor.extraction.relaxation import (BondsNotHeld, ForceFieldCalculator, HeldBonds,
                                             buffer_hydrogen_bonds, relax_border)
from mdmonitor.monitor import Trigger
from tests.extraction.test_cutting import water_box


def cu_frame():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)  # 256 atoms, 14.4 A
    atoms.rattle(0.05, seed=11)
    return atoms


def trigger_for(atoms, step=0, hot=(0,)):
    """A trigger whose local uncertainty peaks at the atoms `hot`, in that order."""
    local = np.zeros(len(atoms))
    local[list(hot)] = np.linspace(1.0, 0.5, len(hot))
    return Trigger(step, step * 2.0, atoms.copy(), local.copy(), local, np.array(hot))


def test_centres_are_most_uncertain_first_and_kept_apart_through_the_boundary():
    atoms = cu_frame()
    # atom 0 sits at the origin; its periodic neighbours across the cell faces are close
    across = int(np.argmin(atoms.get_distances(0, range(1, len(atoms)), mic=True)) + 1)
    far = int(np.argmax(atoms.get_distances(0, range(len(atoms)), mic=True)))
    chosen = choose_centres(atoms, [0, across, far], separation=4.0, limit=5)
    assert chosen == [0, far]
    assert choose_centres(atoms, [0, across, far], separation=4.0, limit=1) == [0]
    assert choose_centres(atoms, [0, across, far], separation=4.0, limit=5, avoid=[0]) == [far]


def test_cooldown_skips_a_region_until_it_expires(tmp_path):
    extractor = Extractor("cluster", queue=tmp_path, core_radius=3.0, cooldown=10)
    atoms = cu_frame()
    assert len(extractor(trigger_for(atoms, step=0, hot=[0]))) == 1
    assert extractor(trigger_for(atoms, step=5, hot=[0])) == []
    assert len(extractor(trigger_for(atoms, step=10, hot=[0]))) == 1


def test_per_run_cap_and_samples(tmp_path):
    extractor = Extractor("embed", queue=tmp_path, core_radius=4.0, n_samples=2,
                          max_per_frame=3, max_boxes=3, cooldown=1)
    atoms = cu_frame()
    far = [0, 130, 200]
    names = extractor(trigger_for(atoms, hot=far))
    assert len(names) == 4  # two centres of two samples: the cap of 3 rounds up to whole centres
    assert extractor(trigger_for(atoms, step=1, hot=far)) == []
    info = ase.io.read(tmp_path / "pending" / names[1]).info
    assert info["sample"] == 1 and info["strategy"] == "embed" and info["noise"] == 0.2


def test_box_files_carry_provenance_and_pass_the_gates(tmp_path):
    extractor = Extractor("cluster", queue=tmp_path, core_radius=3.0, box_length=8.0,
                          run_id="demo-1")
    atoms = cu_frame()
    atoms.set_tags(np.arange(len(atoms)) + 100)
    [name] = extractor(trigger_for(atoms, step=7, hot=[42]))
    assert name == "demo-1_step000000007_atom0000042_s00.extxyz"
    box = CandidateQueue(tmp_path).read(tmp_path / "pending" / name)
    assert box.info["source_step"] == 7 and box.info["source_time_fs"] == 14.0
    assert box.info["centre_index"] == 42 and box.info["centre_tag"] == 142
    assert box.info["centre_local_uncertainty"] == 1.0
    assert box.info["quality"] == "ok" and box.info["core_deviation"] < 1e-12
    assert box.info["relaxation"] == "none"
    assert box.arrays["core_mask"].dtype == bool
    np.testing.assert_array_equal(box.positions[0], [10.0, 10.0, 10.0])  # radius 4 + 6 A vacuum
    manifest = (tmp_path / "manifest.csv").read_text().splitlines()
    assert manifest[0].startswith("when,box,event") and f",{name},written,7,42," in manifest[1]


def test_interrupted_write_leaves_no_file_and_a_restart_writes_each_box_once(tmp_path,
                                                                            monkeypatch):
    atoms = cu_frame()
    extractor = Extractor("cluster", queue=tmp_path, core_radius=3.0)

    def power_cut(_descriptor):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", power_cut)
        with pytest.raises(KeyboardInterrupt):
            extractor(trigger_for(atoms, hot=[3]))
    assert os.listdir(tmp_path / "pending") == []  # neither the box nor its temporary file

    restarted = Extractor("cluster", queue=tmp_path, core_radius=3.0)
    assert len(restarted(trigger_for(atoms, hot=[3]))) == 1
    again = Extractor("cluster", queue=tmp_path, core_radius=3.0)
    assert again(trigger_for(atoms, hot=[3])) == []
    assert len(os.listdir(tmp_path / "pending")) == 1
    os.replace(tmp_path / "pending" / box_name("run", 0, 3), tmp_path / "done" /
               box_name("run", 0, 3))
    assert Extractor("cluster", queue=tmp_path, core_radius=3.0)(trigger_for(atoms, hot=[3])) == []


def test_border_relaxation_lowers_the_buffer_force_and_never_moves_the_core(models, tmp_path):
    from mdmonitor.estimators.mace_model import MaceModel

    atoms = cu_frame()
    extractor = Extractor("cube", queue=tmp_path, core_radius=3.0, box_length=9.0)
    box = extractor.cut(atoms, 0)
    core_before = box.positions[box.arrays["core_mask"]].copy()
    relaxation = relax_border(box, ForceFieldCalculator(MaceModel(models["committee"][0])))
    assert relaxation.steps == 55  # 11 rounds of 5: padded by 2 A, shrunk by 0.2 A per round
    assert relaxation.max_buffer_force < 0.5 * relaxation.max_buffer_force_before
    assert np.array_equal(box.positions[box.arrays["core_mask"]], core_before)
    assert np.allclose(box.cell.lengths(), 9.0)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_inline_and_worker_relaxations_write_the_same_box(llpr, in_tmp):
    atoms = cu_frame()
    boxes = {}
    for mode in ("inline", "worker"):
        extractor = Extractor("cube", queue=mode, core_radius=3.0, box_length=2 * 3.61,
                              relax=mode)
        MonitoredCalculator(llpr, cutoff=4.0, threshold=0.5, extractor=extractor)
        with extractor:
            [name] = extractor(trigger_for(atoms, hot=[0]))
        boxes[mode] = CandidateQueue(mode).read(in_tmp / mode / "pending" / name)
    assert boxes["worker"].info["relaxation"] == "relaxed"
    np.testing.assert_allclose(boxes["worker"].positions, boxes["inline"].positions, atol=1e-8)


def test_a_worker_whose_model_file_was_swapped_loads_nothing_and_leaves_the_box_pending(
        models, in_tmp):
    """The worker reloads the model from its file: hashed first, as every other load."""
    shutil.copy(models["committee"][0], in_tmp / "model.model")
    llpr = LastLayerLPR.load(models["llpr"], model=in_tmp / "model.model")
    extractor = Extractor("cube", queue="q", core_radius=3.0, box_length=2 * 3.61,
                          relax="worker")
    MonitoredCalculator(llpr, cutoff=4.0, threshold=0.5, extractor=extractor)
    shutil.copy(models["committee"][1], in_tmp / "model.model")  # swapped behind the monitor
    with extractor:
        [name] = extractor(trigger_for(cu_frame(), hot=[0]))
    box = CandidateQueue("q").read(in_tmp / "q" / "pending" / name)
    assert box.info["relaxation"] == "pending"  # for `mdmonitor label`, which checks again
    manifest = (in_tmp / "q" / "manifest.csv").read_text()
    assert "the worker could not load the model" in manifest and "SHA-256" in manifest


def test_extractor_inside_the_monitored_calculator(llpr, in_tmp):
    atoms = cu_frame()[:108]
    atoms.center()
    extractor = Extractor("cube", queue="q", core_radius=3.0, box_length=9.0, relax="label")
    atoms.calc = MonitoredCalculator(llpr, cutoff=4.0, threshold=1e-9, extractor=extractor)
    atoms.get_forces()
    [path] = CandidateQueue("q").boxes()
    box = ase.io.read(path)
    assert box.info["relaxation"] == "pending"
    assert box.info["model_sha256"] == llpr.model.sha256()
    assert box.info["centre_index"] == int(np.argmax(atoms.calc.results["local_uncertainty"]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="sphere"), "unknown strategy 'sphere'"),
    (dict(core_radius=7.0, box_length=12.0), "does not fit in a box of 12.0 A"),
    (dict(strategy="cube"), "needs box_length"),
    (dict(strategy="embed", molecules=True), "strategy 'cube' only"),
    (dict(strategy="cube", box_length=10.0, n_samples=3), "give noise > 0"),
    (dict(strategy="cluster", relax="later"), "unknown relax mode"),
    (dict(strategy="cluster", run_id="my run"), "run_id"),
])
def test_bad_settings_are_refused_by_name(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Extractor(queue=tmp_path, **kwargs)


def test_an_extractor_needs_a_threshold(llpr, tmp_path):
    with pytest.raises(ValueError, match="needs a threshold"):
        MonitoredCalculator(llpr, cutoff=4.0, extractor=Extractor("cluster", queue=tmp_path))


def test_relax_with_any_ase_calculator(tmp_path):
    extractor = Extractor("cube", queue=tmp_path, core_radius=3.0, box_length=9.0,
                          relax_with=EMT())
    [name] = extractor(trigger_for(cu_frame(), hot=[5]))
    info = ase.io.read(tmp_path / "pending" / name).info
    assert info["relaxation"] == "relaxed" and info["max_buffer_force"] < 5.0


class FailsAfter(EMT):
    """EMT that raises as a model with NaN forces does, from its `calls`-th force call on."""

    def __init__(self, calls):
        super().__init__()
        self.left = calls

    def calculate(self, *args, **kwargs):
        self.left -= 1
        if self.left < 0:
            raise ValueError("model returned non-finite forces: NaN or inf")
        super().calculate(*args, **kwargs)


def test_an_inline_relaxation_that_raises_leaves_the_box_to_the_labeler_and_the_md_going(
        tmp_path):
    extractor = Extractor("cube", queue=tmp_path, core_radius=3.0, box_length=8.0,
                          relax_with=FailsAfter(3))
    [name] = extractor(trigger_for(cu_frame(), hot=[0]))
    box = ase.io.read(tmp_path / "pending" / name)
    assert box.info["relaxation"] == "pending"
    assert ("inline relaxation failed: model returned non-finite forces: NaN or inf"
            in (tmp_path / "manifest.csv").read_text())


def test_a_box_of_whole_molecules_keeps_its_buffer_s_bonds_through_the_relaxation(tmp_path):
    """Whole waters relaxed by a model that knows no water (ASE's EMT, H-O a metal-like pair):
    every buffer O-H bond keeps its cut length while the buffer moves, so the box passes the
    gates; relaxed freely, 27 hydrogens leave their oxygens and the molecule gate refuses it."""
    frame = water_box()
    centre = int(np.flatnonzero(frame.numbers == 8)[10])
    [name] = Extractor("cube", queue=tmp_path, core_radius=3.0, n_atoms=20, molecules=True,
                       relax_with=EMT())(trigger_for(frame, hot=[centre]))
    box = ase.io.read(tmp_path / "pending" / name)
    cut = cut_cube(frame, centre, 3.0, n_atoms=20, molecules=True)
    before = hydrogen_partners(cut)
    bonds = buffer_hydrogen_bonds(cut, before)
    assert box.info["quality"] == "ok" and box.info["relax_held_bonds"] == len(bonds) == 38
    lengths = [[atoms.get_distance(h, o, mic=True) for h, o in bonds] for atoms in (cut, box)]
    np.testing.assert_allclose(lengths[1], lengths[0], atol=1e-8)
    buffer = ~cut.arrays["core_mask"]
    assert np.abs(box.positions[buffer] - cut.positions[buffer]).max() > 0.1
    assert box.info["max_buffer_force"] < 0.1 * box.info["max_buffer_force_before"]
    relax_border(cut, EMT())
    assert assess(cut, QualityLimits(), 3.0, hydrogens=before)[-1].startswith(
        "relaxation changed 27 molecule bond(s): hydrogen 3 bonded to atom 6 before")


def test_held_bonds_move_the_buffer_as_ase_s_fix_bond_lengths(monkeypatch):
    """HeldBonds takes every bond at once where ASE's FixBondLengths goes bond by bond: the same
    relaxation to 1e-8 A, and the same buffer forces the bonds do not balance."""
    frame = water_box()
    cube = cut_cube(frame, int(np.flatnonzero(frame.numbers == 8)[10]), 3.0, n_atoms=20,
                    molecules=True)
    bonds = buffer_hydrogen_bonds(cube, hydrogen_partners(cube))
    ours, theirs = cube.copy(), cube.copy()
    held = relax_border(ours, EMT(), bonds=bonds)
    monkeypatch.setattr(relaxation, "HeldBonds", FixBondLengths)
    reference = relax_border(theirs, EMT(), bonds=bonds)
    np.testing.assert_allclose(ours.positions, theirs.positions, atol=1e-8)
    assert held.max_buffer_force == pytest.approx(reference.max_buffer_force, abs=1e-6)
    assert held.max_buffer_force_before == pytest.approx(reference.max_buffer_force_before)


def test_bonds_that_cannot_be_held_fail_the_box_at_once(tmp_path, monkeypatch):
    """Three bonds no geometry satisfies (1 + 1 < 3 A) end in BondsNotHeld, not in NaN
    positions; a box whose relaxation meets it goes to failed/ with the reason (a retry would
    meet it again)."""
    atoms = Atoms("OHH", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], cell=[9, 9, 9], pbc=True)
    impossible = HeldBonds([(0, 1), (1, 2), (0, 2)], bondlengths=np.array([1.0, 1.0, 3.0]))
    with pytest.raises(BondsNotHeld, match="held bond lengths"):
        impossible.adjust_positions(atoms, atoms.positions + 0.01)

    class Diverging(HeldBonds):
        def adjust_forces(self, atoms, forces):
            raise BondsNotHeld("held bond lengths diverged")

    monkeypatch.setattr(relaxation, "HeldBonds", Diverging)
    frame = water_box()
    [name] = Extractor("cube", queue=tmp_path, core_radius=3.0, n_atoms=20, molecules=True,
                       relax_with=EMT())(trigger_for(frame, hot=[30]))
    box = ase.io.read(tmp_path / "failed" / name)
    assert box.info["quality"] == "border relaxation: held bond lengths diverged"


def test_a_held_bond_must_join_two_buffer_atoms():
    box = water_box()[:6]
    box.arrays["core_mask"] = np.array([True, True, True, False, False, False])
    with pytest.raises(ValueError, match="must join two buffer atoms"):
        relax_border(box, EMT(), bonds=[(0, 1)])


def test_the_molecule_gate_names_a_hydrogen_shared_by_two_oxygens():
    pair = molecule("H2O") + molecule("H2O")
    pair.positions[3:] += [2.3, 0.0, 0.0]
    pair.cell, pair.pbc = [9.0, 9.0, 9.0], True
    before = hydrogen_partners(pair)
    assert before == {1: [0], 2: [0], 4: [3], 5: [3]}
    pair.positions[1] = 0.5 * (pair.positions[0] + pair.positions[3])  # 1.15 A from both
    assert changed_molecules(pair, before) == ("relaxation changed 1 molecule bond(s): "
                                               "hydrogen 1 bonded to atom 0 before, to [0, 3] "
                                               "after")
    failures = assess(pair, QualityLimits(), core_radius=1.0, hydrogens=before)
    assert failures == [changed_molecules(pair, before)] == [pair.info["quality"]]
