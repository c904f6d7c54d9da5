"""mdmonitor: where, during an MD run, a MACE model is guessing.

Per-atom uncertainty (committee spread, or from one model: last-layer local prediction rigidity,
LTAU training-error distributions, latent Gaussian mixture), aggregated over
neighbours within a cutoff, logged and turned into triggers while the simulation runs; boxes
cut around uncertain regions and queued for ab-initio labeling.
"""

# Public names and the module defining each. They are imported on first use (PEP 562), so that
# `import mdmonitor.lammps.plugin` (which LAMMPS's `lmp` runs on every start through its plugin
# entry point) and `mdmonitor --help` do not pay for importing torch and mace.
_PUBLIC = {
    "aggregate": "aggregation", "Calibration": "quality.calibration",
    "Combined": "estimators.combined", "Committee": "estimators.committee",
    "demo_models": "bundled_models",
    "Extractor": "extraction.extractor", "Labeler": "labeling.labeler",
    "LastLayerLPR": "estimators.llpr", "LatentGMM": "estimators.gmm", "LTAU": "estimators.ltau",
    "MonitoredCalculator": "monitor", "Trigger": "monitor", "UncertaintyLimitExceeded": "monitor",
    "Reference": "labeling.reference", "Instability": "stability",
    "StabilityCriteria": "stability", "keep_freed_memory": "common.freed_memory",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mdmonitor' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
