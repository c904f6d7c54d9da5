"""Labeling the candidate queue with a reference calculation (any ASE calculator; DFT in
practice): the `reference`, per-box `claims`, the labeled `dataset`, the `workers` that run the
calculations (this process or Dask) and the `labeler` that drives them, exactly once per box."""
