"""Per-atom uncertainty of a MACE model: a committee's spread, or from one model its last-layer
local prediction rigidity (LLPR), LTAU training-error distributions or a latent Gaussian mixture."""
