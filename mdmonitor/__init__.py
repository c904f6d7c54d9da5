"""mdmonitor: where, during an MD run, a MACE model is guessing.

Per-atom uncertainty (committee spread or last-layer local prediction rigidity), aggregated over
neighbours within a cutoff, logged and turned into triggers while the simulation runs.
"""

import os
import warnings

# e3nn 0.4.4 (pinned by mace-torch) loads its constants with torch.load, which torch >= 2.6
# refuses under weights_only=True; this flag must be set before e3nn is first imported.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")

from .aggregation import aggregate  # noqa: E402
from .committee import Committee  # noqa: E402
from .bundled_models import demo_models  # noqa: E402
from .llpr import LastLayerLPR  # noqa: E402
from .monitor import MonitoredCalculator, Trigger, UncertaintyLimitExceeded  # noqa: E402

__all__ = ["Committee", "LastLayerLPR", "MonitoredCalculator", "Trigger",
           "UncertaintyLimitExceeded", "aggregate", "demo_models"]
