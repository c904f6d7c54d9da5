"""From an uncertain region to a queued box: centres, cutting, border relaxation, quality gates,
the candidate queue and the selection of its boxes."""
