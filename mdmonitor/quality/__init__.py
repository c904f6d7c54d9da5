"""How well the uncertainty points at the real errors: metrics, calibration, evaluation."""
