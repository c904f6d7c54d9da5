"""Small Cu frames with reference forces, shared by the calibration and evaluation tests."""

import numpy as np
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT


def cu_frames():
    """A rattled 32-atom bulk cell, a rattled 24-atom Cu(100) slab (its surfaces are outside the
    bundled models' bulk-only training domain) and a more strongly rattled bulk cell."""
    frames = []
    for seed, sigma in enumerate((0.05, 0.08, 0.12)):
        if seed == 1:
            atoms = fcc100("Cu", size=(2, 2, 6), a=3.6, vacuum=6.0, periodic=True)
            atoms.info.clear()
        else:
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.rattle(sigma, seed=seed)
        frames.append(atoms)
    return frames


def emt_labeled(frames):
    """Copies of `frames` with EMT forces under REF_forces (eV/A)."""
    labeled = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = EMT()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
        labeled.append(atoms)
    return labeled


def labeled_with_error(frames, predictions, factors, seed=0):
    """Copies of `frames` whose REF_forces differ from the predicted forces by +-c_j x u_j in
    every component, so that e_j = (1/3) sum_k |dF_jk| = c_j x u_j; `factors` gives c (a number,
    or one array per frame)."""
    rng = np.random.default_rng(seed)
    labeled = []
    for index, (atoms, prediction) in enumerate(zip(frames, predictions)):
        factor_j = np.broadcast_to(factors if np.isscalar(factors) else factors[index],
                                   (len(atoms),))
        signs = rng.choice([-1.0, 1.0], size=(len(atoms), 3))
        atoms = atoms.copy()
        atoms.arrays["REF_forces"] = (prediction.forces - signs * (factor_j
                                      * prediction.atomic_uncertainty)[:, None])
        labeled.append(atoms)
    return labeled


def unranked_errors(frames, predictions):
    """`labeled_with_error` with e_j = 0.0005 / u_j (eV/A): errors that fall as the uncertainty
    grows, which a monotone map can only fit by a constant."""
    return labeled_with_error(frames, predictions,
                              [0.0005 / p.atomic_uncertainty**2 for p in predictions])
