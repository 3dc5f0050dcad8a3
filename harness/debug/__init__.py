"""Finding where accuracy goes: artifact-vs-artifact comparison, per-layer divergence, Q/DQ fallback search."""
