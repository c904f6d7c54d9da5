"""Single-model estimators paid only when read: with interval N the LLPR, LTAU and GMM run the
model alone on the steps the monitor does not read (no last-layer features, no latent
descriptors, no nearest-neighbour search or mixture), and on the monitored steps give what the
same estimator monitored on every step gives; the forces, and so the trajectory, are the same
either way."""

import numpy as np
import pytest

from mdmonitor import MonitoredCalculator
from tests.test_monitor_drive import nve

INTERVAL = 3
STEPS = 7
# the extras of a monitored step, besides atomic_uncertainty and local_uncertainty
EXTRAS = {"llpr": ("atomic_rigidity", "rigidity"),
          "ltau": ("latent_distance", "out_of_domain"),
          "gmm": ("latent_nll",)}


@pytest.fixture(params=["llpr", "ltau", "gmm"])
def single(request):
    """(name, bundled estimator of that kind)."""
    return request.param, request.getfixturevalue(request.param)


def count_uncertainty_work(monkeypatch, name: str, estimator) -> dict:
    """{part: calls} of the parts of `estimator` that only its uncertainty needs, counted around
    the real methods: the LLPR's last-layer features; LTAU's and the GMM's latent descriptors,
    LTAU's nearest-neighbour search and the GMM's mixture NLL."""
    owners = ([(estimator.features, "features")] if name == "llpr" else
              [(estimator.latent, "descriptors"),
               (estimator, "_neighbours" if name == "ltau" else "latent_nll")])
    counts = {part: 0 for _, part in owners}
    for owner, part in owners:
        def counted(*args, part=part, real=getattr(owner, part), **kwargs):
            counts[part] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, part, counted)
    return counts


def test_unmonitored_steps_compute_no_uncertainty(single, cu_slab, monkeypatch):
    name, estimator = single
    counts = count_uncertainty_work(monkeypatch, name, estimator)
    calc = MonitoredCalculator(estimator, cutoff=4.0, interval=INTERVAL)
    cu_slab.calc = calc
    for step in range(2 * INTERVAL):
        before = dict(counts)
        cu_slab.positions[0, 0] += 0.01
        cu_slab.get_forces()
        done = {part: counts[part] - before[part] for part in counts}
        if step % INTERVAL:  # the model alone: nothing of the uncertainty, not even stale
            assert done == {part: 0 for part in counts}, step
            assert not {"atomic_uncertainty", "local_uncertainty", *EXTRAS[name]} & set(
                calc.results), step
            assert calc.results["energies"].shape == (len(cu_slab),)
        else:
            assert all(n >= 1 for n in done.values()), (step, done)
            assert {"atomic_uncertainty", "local_uncertainty", *EXTRAS[name]} <= set(
                calc.results), step


def test_monitored_steps_and_forces_match_monitoring_every_step(single, cu_slab):
    name, estimator = single
    every = nve(cu_slab, MonitoredCalculator(estimator, cutoff=4.0), STEPS)
    sparse = nve(cu_slab, MonitoredCalculator(estimator, cutoff=4.0, interval=INTERVAL), STEPS)
    for step, ((x, forces, _, full), (x_sparse, forces_sparse, _, results)) in enumerate(
            zip(every, sparse, strict=True)):
        # the same model call either way: the same forces, so the same trajectory, bit for bit
        np.testing.assert_array_equal(x_sparse, x)
        np.testing.assert_array_equal(forces_sparse, forces)
        assert results["energy"] == full["energy"]
        np.testing.assert_array_equal(results["stress"], full["stress"])
        np.testing.assert_array_equal(results["energies"], full["energies"])
        if step % INTERVAL:
            assert "atomic_uncertainty" not in results, step
            continue
        for key in ("atomic_uncertainty", "local_uncertainty", *EXTRAS[name]):
            np.testing.assert_allclose(results[key], full[key], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{key} at step {step}")
