"""Extraction refuses what would give nonsense, by name: settings out of range at construction,
a box far larger than the source's periodic cell before the first trigger, and boxes with
non-finite positions at the quality gates (they used to reach the queue and hang the labeler)."""

import numpy as np
import pytest
from ase.build import bulk, fcc100

from mdmonitor import MonitoredCalculator
from mdmonitor.extraction.box_quality import QualityLimits, assess
from mdmonitor.extraction.cutting import (
    MAX_SOURCE_COPIES,
    cut_cluster,
    cut_cube,
    cut_embedding,
)
from mdmonitor.extraction.extractor import Extractor


def cu_cell():
    """32-atom fcc Cu, a 7.22 A cube: a box may be up to 2 x 7.22 A across."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    return atoms


@pytest.mark.parametrize("name, value, meaning", [
    ("noise", float("nan"), "non-negative displacement in A"),
    ("noise", -0.1, "non-negative displacement in A"),
    ("separation", 0.0, "positive distance in A"),
    ("separation", float("inf"), "positive distance in A"),
    ("min_distance", -1.0, "positive distance in A"),
    ("max_boxes", -1, "positive integer"),
    ("max_boxes", 2.5, "positive integer"),
    ("seed", -1, "non-negative integer"),
    ("seed", 0.5, "non-negative integer"),
    ("n_atoms", 0, "positive integer"),
])
def test_settings_out_of_range_are_refused_at_construction(tmp_path, name, value, meaning):
    with pytest.raises(ValueError, match=f"{name} must be a {meaning}, got {value!r}"):
        Extractor("cube", queue=tmp_path, core_radius=3.0, box_length=9.0, **{name: value})


@pytest.mark.parametrize("cut, setting", [
    (lambda atoms: cut_cube(atoms, 0, 3.0, box_length=30.0), "box_length 30 A"),
    (lambda atoms: cut_cube(atoms, 0, 3.0, n_atoms=400), "n_atoms = 400"),
    (lambda atoms: cut_cluster(atoms, 0, 3.0, radius=15.0), "cluster radius 15 A"),
    (lambda atoms: cut_embedding(atoms, 0, 9.0, np.random.default_rng(0)), "core_radius 9 A"),
])
def test_a_box_spanning_more_than_eight_source_cells_is_refused_with_the_limit(cut, setting):
    with pytest.raises(ValueError, match=rf"{setting} gives a box .* copies of the 32-atom "
                                         rf"frame's periodic cell .* at most {MAX_SOURCE_COPIES} "
                                         r"are allowed.* at most 14.44 A across"):
        cut(cu_cell())


def test_a_box_of_twice_the_cell_is_cut_and_the_limit_counts_periodic_axes_only():
    assert len(cut_cube(cu_cell(), 0, 3.0, box_length=14.4)) > 32  # 7.97 copies: allowed
    slab = fcc100("Cu", size=(2, 2, 3), a=3.61, vacuum=20.0)  # periodic along x and y only
    assert len(cut_cluster(slab, 0, 3.0, radius=7.0)) > 12  # 2.74 x 2.74 = 7.52 cells across
    with pytest.raises(ValueError, match=r"cluster radius 7.5 A .* 8.63 copies .* \(heights "
                                         r"5.105, 5.105 A\)"):
        cut_cluster(slab, 0, 3.0, radius=7.5)


def test_the_monitor_refuses_an_oversized_box_at_the_first_force_call(llpr, tmp_path):
    """Not at the first trigger, which may come hours into the run: the threshold here is never
    crossed, and still the run does not start."""
    extractor = Extractor("cube", queue=tmp_path, core_radius=3.0, box_length=30.0)
    atoms = cu_cell()
    atoms.calc = MonitoredCalculator(llpr, cutoff=4.0, threshold=1e9, extractor=extractor)
    with pytest.raises(ValueError, match="box_length 30 A gives a box 30 A across, 71.7 copies"):
        atoms.get_forces()
    assert not any(tmp_path.rglob("*.extxyz"))


def test_a_box_with_non_finite_positions_fails_its_gates_unmeasured():
    box = cut_cube(cu_cell(), 0, 3.0, box_length=9.0)
    box.positions[5, 2] = np.nan
    failures = assess(box, QualityLimits(), 3.0)
    assert failures == [f"box: positions must be finite, but atom 5 has {box.positions[5]}"]
    assert box.info["quality"] == failures[0]
    assert "min_distance" not in box.info
