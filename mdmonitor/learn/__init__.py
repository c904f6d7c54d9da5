"""The closed active-learning loop: monitored MD, selection, labeling, retraining with
mace-torch's trainer, refit of the estimator and calibration, generation after generation.

    from mdmonitor.learn import ActiveLearning, load_config
    ActiveLearning(load_config("cu_slab.toml")).run()      # or: mdmonitor learn cu_slab.toml
"""

from .config import load_config
from .loop import ActiveLearning

__all__ = ["ActiveLearning", "load_config"]
