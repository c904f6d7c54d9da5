"""Structures made to be uncertain rather than met in MD: `adversarial` sampling, by gradient
ascent on the uncertainty, queued for labeling like the boxes the monitor cuts."""
