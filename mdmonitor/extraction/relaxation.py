"""Border relaxation of a cut cube (Heid et al. 2024, seed 002, Methods B).

Core atoms stay fixed; the cell is padded by `pad` A on every side; then, repeatedly, a few
optimizer steps move the buffer atoms and the cell shrinks by `shrink` A per side, until the box is back at
its own size, where a last round of steps is taken. The cut surfaces thereby heal into a
physically sensible border before the box is labeled. The optimizer is ASE's L-BFGS: the paper's
BFGS diagonalises its Hessian every step, which under a busy BLAS thread pool cost 0.5 s per
step on a 34-atom box, more than the force call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms
from ase.optimize import LBFGS

PAD = 2.0        # A per side
SHRINK = 0.2     # A per side and round
STEPS_PER_ROUND = 5


class ForceFieldCalculator(Calculator):
    """ASE calculator around anything with `predict(atoms)` giving energy, forces (and stress).

    Used to relax buffers with the monitor's own model: a `MaceModel` or a `Committee` (mean).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        output = self.model.predict(self.atoms)
        self.results = {"energy": output.energy, "free_energy": output.energy,
                        "forces": output.forces}
        if output.stress is not None:
            self.results["stress"] = output.stress


def calculator_from_files(model_files, sha256=None) -> ForceFieldCalculator:
    """The relaxation calculator of MACE model files: their committee mean, or the one model.

    sha256: the hex SHA-256 recorded for each file; a file whose bytes differ is refused before
    it is loaded (trusted_pickles.ModelFileChanged), as loading a model file runs its pickled code.
    """
    from ..estimators.committee import Committee
    from ..estimators.mace_model import MaceModel

    files = [str(f) for f in model_files]
    digests = [None] * len(files) if sha256 is None else list(sha256)
    if len(digests) != len(files):
        raise ValueError(f"{len(files)} model files {files} but {len(digests)} SHA-256 "
                         "recorded for them")
    models = [MaceModel(f, sha256=digest) for f, digest in zip(files, digests)]
    return ForceFieldCalculator(Committee(models=models) if len(models) > 1 else models[0])


@dataclass
class Relaxation:
    """What a border relaxation did: optimizer steps, buffer forces (eV/A) before and after, seconds."""

    steps: int
    max_buffer_force_before: float
    max_buffer_force: float
    seconds: float


def max_buffer_force(box: Atoms, forces: np.ndarray) -> float:
    """Largest force norm (eV/A) on the atoms that are not in the core."""
    buffer = ~box.arrays["core_mask"]
    return float(np.linalg.norm(forces[buffer], axis=1).max()) if buffer.any() else 0.0


def relax_border(box: Atoms, calculator: Calculator, pad: float = PAD, shrink: float = SHRINK,
                 steps: int = STEPS_PER_ROUND) -> Relaxation:
    """Relax the buffer of cubic `box` in place; core atoms end exactly where they were."""
    if not box.pbc.all():
        raise ValueError("border relaxation needs a periodic box; a cluster has no border to heal")
    start = time.perf_counter()
    core = box.arrays["core_mask"]
    core_positions = box.positions[core].copy()
    length = box.cell.lengths()
    work = box.copy()
    work.set_constraint(FixAtoms(mask=core))
    work.calc = calculator
    before = max_buffer_force(box, work.get_forces(apply_constraint=False))
    taken = 0
    rounds = int(round(pad / shrink))
    offset = 0.0
    for k in range(rounds, -1, -1):
        # cell of length + 2 k shrink per side, centre kept in the middle
        new_offset = k * shrink
        work.set_cell(np.diag(length + 2 * new_offset))
        work.set_positions(work.positions + (new_offset - offset), apply_constraint=False)
        work.positions[core] = core_positions + new_offset
        offset = new_offset
        optimizer = LBFGS(work, logfile=None)
        optimizer.run(fmax=1e-3, steps=steps)
        taken += optimizer.nsteps
    box.positions[~core] = work.positions[~core]
    box.positions[core] = core_positions
    work.positions[core] = core_positions
    after = max_buffer_force(box, work.get_forces(apply_constraint=False))
    return Relaxation(taken, before, after, time.perf_counter() - start)
