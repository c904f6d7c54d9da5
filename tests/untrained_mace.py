"""A MACE model with random (seeded) weights, for tests where only its elements, shapes or
files matter."""

import warnings

import numpy as np
import torch

from mdmonitor.common.mace_imports import o3


def untrained_mace(path, atomic_numbers, atomic_energies, seed=0):
    """A float64 MACE (one interaction, 8 scalar channels, r_max 4 A) saved to `path`; E0s in
    eV, one per element of `atomic_numbers`."""
    from mace import modules

    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            with warnings.catch_warnings():  # (TorchScript on e3nn's annotations, as it builds)
                warnings.filterwarnings("ignore", message="The TorchScript type system")
                network = modules.MACE(
                    r_max=4.0, num_bessel=6, num_polynomial_cutoff=5, max_ell=2,
                    interaction_cls=block, interaction_cls_first=block, num_interactions=1,
                    num_elements=len(atomic_numbers), hidden_irreps=o3.Irreps("8x0e"),
                    MLP_irreps=o3.Irreps("8x0e"), atomic_energies=np.array(atomic_energies),
                    avg_num_neighbors=12.0, atomic_numbers=list(atomic_numbers), correlation=2,
                    gate=torch.nn.functional.silu)
        finally:
            torch.set_default_dtype(previous)
    torch.save(network, path)
    return path
