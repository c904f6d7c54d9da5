"""Choosing where to cut: the most uncertain atoms of a frame, spread apart, not re-cut at once."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.geometry import get_distances


@dataclass
class CoolDown:
    """Remembers the centres cut in the last `steps` steps, so a region is not cut again while it
    stays uncertain (the region is where that centre atom is now: it moves with its atoms)."""

    steps: int
    recent: list[tuple[int, int]] = field(default_factory=list)  # (step, atom index)

    def record(self, step: int, atom: int) -> None:
        self.recent.append((step, atom))

    def active(self, step: int) -> list[int]:
        """Atom indices of the centres cut less than `steps` steps before `step`."""
        self.recent = [(s, a) for s, a in self.recent if step - s < self.steps]
        return [a for _, a in self.recent]


def choose_centres(atoms: Atoms, candidates, separation: float, limit: int,
                   avoid=()) -> list[int]:
    """Greedy choice among `candidates` (atom indices, most uncertain first).

    A candidate is taken unless it lies within `separation` A (minimum image) of a centre
    already taken or of an atom in `avoid` (recent centres); at most `limit` centres.
    """
    candidates = np.asarray(candidates, dtype=int)
    available = np.ones(len(candidates), dtype=bool)

    def exclude_around(indices) -> None:
        indices = [i for i in indices if 0 <= i < len(atoms)]
        if indices and available.any():
            distances = get_distances(atoms.positions[candidates], atoms.positions[indices],
                                      cell=atoms.cell, pbc=atoms.pbc)[1]
            available[:] &= np.all(distances >= separation, axis=1)

    exclude_around(list(avoid))
    chosen: list[int] = []
    while len(chosen) < limit and available.any():
        chosen.append(int(candidates[np.argmax(available)]))
        exclude_around(chosen[-1:])
    return chosen
