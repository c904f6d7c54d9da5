"""The geometry every neighbour search needs: finite positions and cell, and periodic cell
vectors that span a length, area or volume. Checked before a model, the aggregation or a cut
sees a structure (MACE's neighbour search hangs for minutes on NaN positions, and a zero
periodic cell gives it endless images)."""

from __future__ import annotations

import numpy as np

from .settings import finite_array


def check_structure(atoms, what: str = "the structure") -> None:
    """ValueError, its message starting with `what`, unless `atoms` has finite positions and cell
    and periodic cell vectors that span a length, area or volume: what any neighbour search needs
    (MACE's hangs for minutes on NaN positions, and a zero periodic cell gives it endless images).
    """
    try:
        checked_geometry(atoms.positions, atoms.cell.array, atoms.pbc)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def checked_geometry(positions, cell, pbc):
    """positions (N, 3) and cell (3, 3) as float64 arrays, pbc as (3,) bools; ValueError unless
    positions and cell are finite and the periodic cell vectors are not degenerate."""
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    finite_array("positions", positions)

    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3) with cell vectors as rows, got {cell.shape}")
    finite_array("cell", cell, row="cell vector")
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.shape not in ((), (3,)):
        raise ValueError(f"pbc must be one bool or three (one per cell vector), got shape {pbc.shape}")
    pbc = np.broadcast_to(pbc, (3,)).copy()
    _require_nondegenerate(cell, pbc)
    return positions, cell, pbc


def _require_nondegenerate(cell, pbc):
    """ValueError if the periodic cell vectors do not span a length, area or volume."""
    periodic = cell[pbc]
    lengths = np.linalg.norm(periodic, axis=1)
    spanned = np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0))
    if np.any(lengths == 0) or spanned <= 1e-9 * np.prod(lengths):
        axes = [int(i) for i in np.flatnonzero(pbc)]
        raise ValueError(
            f"cell is degenerate along the periodic axes {axes}: its vectors there span zero "
            f"length, area or volume (cell={cell.tolist()}); give linearly independent, nonzero "
            "cell vectors for periodic axes or set pbc=False along them"
        )
