"""Adversarial sampling (Tan et al. 2023, Sec. 2.4, Eqs. 15-16): the ascent raises U, keeps the
predicted energy under the cap, follows the true gradient of log(p U), normalises p as Eq. 16,
writes boxes the queue reads, and refuses bad input by name."""

import ase.io
import numpy as np
import pytest
from ase.build import fcc100
from ase.calculators.emt import EMT

from mdmonitor import LTAU, Committee, aggregate
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.sampling.adversarial import AdversarialSampler, queue_sample


@pytest.fixture(scope="module")
def pair(models):
    """A two-member committee: the cheapest one with a variance."""
    return Committee.from_mace(models["committee"][:2])


@pytest.fixture
def small_slab():
    """Cu(100), 2 x 2 x 4 layers (16 atoms), rattled."""
    atoms = fcc100("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0, periodic=True)
    atoms.rattle(0.05, seed=7)
    atoms.info.clear()  # (ASE's adsorbate-site table, which extxyz cannot store)
    return atoms


def estimator(name, request):
    return request.getfixturevalue({"committee": "pair"}.get(name, name))


@pytest.mark.parametrize("name", ["committee", "llpr", "gmm"])
def test_uncertainty_rises_at_every_step_for_a_small_step(name, request, small_slab):
    # kT = 1 eV/atom: p barely pulls, so a correct gradient of log(p U) raises U itself
    sampler = AdversarialSampler(estimator(name, request), kT=1.0, step=0.005, iterations=4,
                                 energy_cap=10.0)
    result = sampler.sample(small_slab)
    values = [step.uncertainty for step in result.history]
    assert len(values) == 5, result.stop_reason
    assert all(step.halvings == 0 for step in result.history), "a full step was refused"
    assert np.all(np.diff(values) > 0), values
    assert values[-1] > values[0] * 1.01
    assert np.isclose(result.atomic_uncertainty.mean(), values[-1])


def test_energy_cap_holds_for_every_step_and_the_output(llpr, small_slab):
    cap = 0.05  # eV: at kT = 5 eV/atom the ascent would climb far past it
    sampler = AdversarialSampler(llpr, kT=5.0, step=0.05, iterations=12, energy_cap=cap)
    before = small_slab.positions.copy()
    result = sampler.sample(small_slab)
    above = [step.energy_above_start for step in result.history]
    assert max(above) <= cap
    assert max(above) > 0.5 * cap  # the cap was reached, and steps were shortened for it
    assert any(step.halvings for step in result.history) or "cap" in result.stop_reason
    start = llpr.predict(small_slab).energy
    assert llpr.predict(result.atoms).energy - start <= cap
    np.testing.assert_array_equal(small_slab.positions, before)  # the start is not moved


@pytest.mark.parametrize("name", ["committee", "llpr", "gmm"])
def test_gradient_matches_a_finite_difference(name, request, small_slab):
    sampler = AdversarialSampler(estimator(name, request), kT=0.05)
    log_partition = 0.3  # any constant: it does not move the gradient
    here = sampler.evaluate(small_slab, log_partition)
    atom, axis, h = 5, 2, 1e-4
    values = []
    for sign in (1, -1):
        moved = small_slab.copy()
        moved.positions[atom, axis] += sign * h
        values.append(sampler.evaluate(moved, log_partition).log_objective)
    finite_difference = (values[0] - values[1]) / (2 * h)
    assert abs(here.gradient[atom, axis]) > 1e-3
    assert here.gradient[atom, axis] == pytest.approx(finite_difference, rel=1e-5)


def test_p_is_normalised_over_the_training_set_as_in_eq16(models, llpr, small_slab):
    kT = 0.5
    train = ase.io.read(models["training_set"], index=":")
    per_atom = np.array([t.info["REF_energy"] / len(t) for t in train])
    expected = np.log(np.sum(np.exp(-per_atom / kT)))
    settings = dict(kT=kT, step=0.01, iterations=3, energy_cap=1.0)
    by_training = AdversarialSampler(llpr, training_set=models["training_set"], **settings)
    by_start = AdversarialSampler(llpr, **settings)
    assert by_training.log_partition(0.0, 1) == pytest.approx(expected, rel=1e-12)
    a, b = by_training.sample(small_slab), by_start.sample(small_slab)
    start = llpr.predict(small_slab).energy / len(small_slab)
    for step_a, step_b in zip(a.history, b.history):
        energy = start + step_a.energy_above_start / len(small_slab)
        assert step_a.log_probability == pytest.approx(-energy / kT - expected, abs=1e-9)
        assert step_b.log_probability == pytest.approx(-(energy - start) / kT, abs=1e-9)
    # the denominator is a constant: it sets p's value, never the path
    np.testing.assert_allclose(a.atoms.positions, b.atoms.positions, atol=1e-12)


def test_whole_structures_and_boxes_are_readable_from_the_queue(llpr, cu_slab, tmp_path):
    result = AdversarialSampler(llpr, kT=0.05, step=0.01, iterations=2).sample(cu_slab)
    queue = CandidateQueue(tmp_path / "queue")
    name = queue_sample(result, queue.root, llpr, frame=3, sample=1)
    assert name.startswith("adversarial_step000000003_atom") and name.endswith("_s01.extxyz")
    whole = queue.read(queue.path("pending", name))
    np.testing.assert_allclose(whole.positions, result.atoms.positions, atol=1e-6)
    assert whole.arrays["core_mask"].all()
    assert whole.info["adversarial_uncertainty_end"] == pytest.approx(
        result.history[-1].uncertainty)
    assert whole.info["model_sha256"] == llpr.model.sha256()
    assert queue_sample(result, queue.root, llpr, frame=3, sample=1) is None  # no duplicate

    extractor = Extractor("cube", queue=queue.root, core_radius=3.0, box_length=8.0, relax="label",
                          run_id="adv-cube")
    name = queue_sample(result, queue.root, llpr, frame=3, extractor=extractor)
    box = queue.read(queue.path("pending", name))
    local = aggregate(result.atoms, result.atomic_uncertainty, 4.0)
    assert box.info["centre_index"] == box.arrays["source_index"][0] == np.argmax(local)
    assert box.info["centre_local_uncertainty"] == pytest.approx(local.max())
    assert box.info["sampling"] == "adversarial" and box.info["strategy"] == "cube"


@pytest.mark.parametrize("setting, value, meaning", [
    ("kT", 0.0, "positive energy in eV per atom"),
    ("kT", -0.05, "positive energy in eV per atom"),
    ("step", -0.01, "positive displacement in A"),
    ("energy_cap", 0.0, "positive energy in eV"),
    ("noise", -0.1, "non-negative displacement in A"),
])
def test_settings_out_of_range_are_refused_by_name(llpr, setting, value, meaning):
    settings = {"kT": 0.05, setting: value}
    with pytest.raises(ValueError, match=f"{setting} must be a {meaning}, got {value!r}"):
        AdversarialSampler(llpr, **settings)


@pytest.mark.parametrize("name", ["committee", "llpr", "gmm"])
def test_an_element_the_model_does_not_know_is_refused(name, request, small_slab):
    small_slab.numbers[3] = 26  # Fe
    sampler = AdversarialSampler(estimator(name, request), kT=0.05)
    with pytest.raises(ValueError, match=r"\['Fe'\] not known to model"):
        sampler.sample(small_slab)


def test_estimators_without_a_gradient_are_refused(models):
    with pytest.raises(ValueError, match="piecewise constant"):
        AdversarialSampler(LTAU.load(models["ltau"]), kT=0.05)
    with pytest.raises(ValueError, match="committee of MACE model files"):
        AdversarialSampler(Committee([EMT(), EMT()]), kT=0.05)


def test_a_training_set_without_reference_energies_is_refused(llpr, small_slab, tmp_path):
    ase.io.write(tmp_path / "unlabelled.extxyz", small_slab)
    with pytest.raises(ValueError, match="training frame 0 has no reference energy"):
        AdversarialSampler(llpr, kT=0.05, training_set=tmp_path / "unlabelled.extxyz")
