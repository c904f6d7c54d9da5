"""A small queue of real embedded boxes, shared by the PR-guided selection tests."""

import numpy as np
from ase.build import fcc100

from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.monitor import Trigger


def embedded_pool(root, estimator, run_id="md"):
    """Queue `root` of embedded boxes (core radius 3 A, 2 noisy samples each) around the top and
    bottom atoms of 2 frames (steps 0 and 10) of a 36-atom Cu(100) slab, cut by an extractor of
    `estimator`'s model(s); returns the CandidateQueue."""
    extractor = Extractor("embed", queue=root, core_radius=3.0, n_samples=2, max_per_frame=2,
                          separation=3.0, cooldown=1, run_id=run_id, seed=1)
    extractor.use_estimator(estimator)
    for step, seed in ((0, 2), (10, 3)):
        slab = fcc100("Cu", size=(3, 3, 4), a=3.61, vacuum=5.0, periodic=True)
        slab.rattle(0.08, seed=seed)
        uncertainty = np.zeros(len(slab))
        top, bottom = int(np.argmax(slab.positions[:, 2])), int(np.argmin(slab.positions[:, 2]))
        extractor(Trigger(step, None, slab, uncertainty, uncertainty, np.array([top, bottom])))
    return CandidateQueue(root)
