"""The quick mode of scripts/heid_water_study.py (one cycle of both strategies, GFN1-xTB): the
run directories, the test set grown by the cycle, and oxygen-centred boxes of whole waters
holding the requested count."""

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.neighborlist import neighbor_list

pytest.importorskip("tblite")
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("heid") / "study"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "heid_water_study.py"), "--quick",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    return out


def test_both_strategies_ran_one_cycle_and_grew_the_test_set(study):
    report = json.loads((study / "study.json").read_text())
    assert report["cycles"] == 1
    for strategy in ("uncertainty", "random"):
        generation = study / strategy / "generation-000"
        state = json.loads((generation / "state.json").read_text())
        assert state["stage"] == "done" and state["boxes"] == 2 and state["test_boxes"] == 2
        assert len(ase.io.read(generation / "labeled.extxyz", ":")) == 2
        assert len(ase.io.read(generation / "test-boxes.extxyz", ":")) == 2
        assert state["grown_test"]["frames"] == 2  # the set the loop reports on
        assert (study / strategy / "generation-001" / "models").is_dir()
        curves = report["curves_eV_per_A"][strategy]
        assert set(curves) == {"all", "lowest energy", "second quartile", "third quartile",
                               "highest energy"}
        assert all(len(v) == 2 and all(0 < x < 5 for x in v) for v in curves.values())
    assert report["test_boxes"] == 4  # pooled over both strategies
    # goal 3's production MD (start and final models) ran its quick length
    assert {run["steps"] for runs in report["stability"].values() for run in runs.values()} \
        == {20}


def test_boxes_are_half_the_volume_of_whole_waters_around_an_oxygen(study):
    start = ase.io.read(study / "start" / "data" / "start.extxyz")
    waters = int((start.numbers == 8).sum())
    for strategy in ("uncertainty", "random"):
        generation = study / strategy / "generation-000"
        for name in ("labeled.extxyz", "test-boxes.extxyz"):
            for box in ase.io.read(generation / name, ":"):
                assert box.numbers[0] == 8  # the centre, an oxygen
                assert (box.numbers == 8).sum() == waters // 2
                assert (box.numbers == 1).sum() == 2 * (box.numbers == 8).sum()
                assert box.get_volume() == pytest.approx(start.get_volume() / 2, rel=1e-6)
                # every hydrogen bonded to exactly one oxygen of its box (whole molecules)
                i, j = neighbor_list("ij", box, 1.25)
                oh = (box.numbers[i] == 1) & (box.numbers[j] == 8)
                assert np.all(np.bincount(i[oh], minlength=len(box))[box.numbers == 1] == 1)
                assert np.isfinite(box.arrays["REF_forces"]).all()
                # its border relaxed holding the buffer's O-H bonds (a hydrogen bonded to no or
                # to two oxygens in the MD frame is not held)
                buffer_hydrogens = ((box.numbers == 1) & ~box.arrays["core_mask"]).sum()
                assert 0 < box.info["relax_held_bonds"] <= buffer_hydrogens
