"""Border relaxation of a cut cube (Heid et al. 2024, seed 002, Methods B).

Core atoms stay fixed; the cell is padded by `pad` A on every side; then, repeatedly, a few
optimizer steps move the buffer atoms and the cell shrinks by `shrink` A per side, until the box
is back at its own size, where a last round of steps is taken. The cut surfaces thereby heal
into a physically sensible border before the box is labeled. Bonds given to `relax_border` (the
X-H bonds of a box of whole molecules) are held at their cut lengths (`HeldBonds`), so that a
model that knows the molecules poorly cannot take a hydrogen from its molecule; the paper
relaxes them freely. The optimizer is ASE's L-BFGS: the paper's BFGS diagonalises its Hessian
every step, which under a busy BLAS thread pool cost 0.5 s per step on a 34-atom box, more than
the force call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms, FixBondLengths
from ase.geometry import find_mic
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


class BondsNotHeld(RuntimeError):
    """The held bonds could not be kept at their lengths (a geometry SHAKE/RATTLE cannot
    follow, e.g. a hydrogen pulled between two heavy atoms)."""


class HeldBonds(FixBondLengths):
    """ASE's FixBondLengths (SHAKE on positions, RATTLE on forces) with each sweep taking every
    bond at once: ASE's sweeps bond by bond in Python, which made the border relaxation of a
    64-water cube 7 times slower than with no bond held (benchmarks/extraction.py)."""

    def _bonds(self, atoms: Atoms):
        a, b = self.pairs.T
        masses = atoms.get_masses()
        vectors = find_mic(atoms.positions[a] - atoms.positions[b], atoms.cell, atoms.pbc)[0]
        if self.bondlengths is None:  # (the lengths at the first call are held)
            self.bondlengths = np.linalg.norm(vectors, axis=1)
        return a, b, masses[a], masses[b], vectors

    def _converge(self, sweep) -> None:
        """Run `sweep` (giving the largest correction left) until it is within tolerance."""
        for _ in range(self.maxiter):
            with np.errstate(all="ignore"):
                left = sweep()
            if not np.isfinite(left):
                raise BondsNotHeld("held bond lengths diverged")
            if left <= self.tolerance:
                return
        raise BondsNotHeld(f"held bond lengths did not converge in {self.maxiter} sweeps")

    def adjust_positions(self, atoms, new):
        a, b, mass_a, mass_b, d0 = self._bonds(atoms)
        shift = atoms.positions[a] - atoms.positions[b] - d0
        reduced = 1 / (1 / mass_a + 1 / mass_b)

        def sweep() -> float:
            d1 = new[a] - new[b] - shift
            x = 0.5 * (self.bondlengths ** 2 - np.einsum("ij,ij->i", d1, d1)) / np.einsum(
                "ij,ij->i", d0, d1)
            np.add.at(new, a, (x * reduced / mass_a)[:, None] * d0)
            np.add.at(new, b, -(x * reduced / mass_b)[:, None] * d0)
            return float(np.max(np.abs(x), initial=0.0))

        self._converge(sweep)

    def adjust_momenta(self, atoms, p):
        a, b, mass_a, mass_b, d = self._bonds(atoms)
        reduced = 1 / (1 / mass_a + 1 / mass_b)

        def sweep() -> float:
            dv = p[a] / mass_a[:, None] - p[b] / mass_b[:, None]
            x = -np.einsum("ij,ij->i", dv, d) / self.bondlengths ** 2
            np.add.at(p, a, (x * reduced)[:, None] * d)
            np.add.at(p, b, -(x * reduced)[:, None] * d)
            return float(np.max(np.abs(x), initial=0.0))

        self._converge(sweep)


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


def buffer_hydrogen_bonds(box: Atoms, partners: dict[int, list[int]]) -> list[tuple[int, int]]:
    """(hydrogen, heavy atom) pairs of the buffer: each buffer hydrogen bonded to exactly one
    heavy atom, itself in the buffer, in `partners` (box_quality.hydrogen_partners)."""
    core = box.arrays["core_mask"]
    return [(h, heavy[0]) for h, heavy in partners.items()
            if len(heavy) == 1 and not core[h] and not core[heavy[0]]]


def relax_border(box: Atoms, calculator: Calculator, pad: float = PAD, shrink: float = SHRINK,
                 steps: int = STEPS_PER_ROUND, bonds=()) -> Relaxation:
    """Relax the buffer of cubic `box` in place; core atoms end exactly where they were.

    bonds: pairs of buffer atoms whose distance is held at its starting value (A); the buffer
    forces reported are then those the held bonds do not balance.
    """
    if not box.pbc.all():
        raise ValueError("border relaxation needs a periodic box; a cluster has no border to heal")
    start = time.perf_counter()
    core = box.arrays["core_mask"]
    held = HeldBonds(np.asarray(bonds, dtype=int).reshape(-1, 2)) if len(bonds) else None
    if held is not None and core[held.pairs].any():
        raise ValueError("a bond held in a border relaxation must join two buffer atoms")
    core_positions = box.positions[core].copy()
    length = box.cell.lengths()
    work = box.copy()
    work.set_constraint([FixAtoms(mask=core)] + ([held] if held is not None else []))
    work.calc = calculator

    def buffer_force() -> float:
        forces = work.get_forces(apply_constraint=False)
        if held is not None:
            held.adjust_forces(work, forces)
        return max_buffer_force(box, forces)

    before = buffer_force()
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
    after = buffer_force()
    return Relaxation(taken, before, after, time.perf_counter() - start)
