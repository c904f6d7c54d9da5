"""From an uncertain region to a labeled box: centres, cutting, border relaxation, quality gates,
the candidate queue and the labeler that runs the reference calculation."""
