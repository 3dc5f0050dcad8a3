"""Latency statistics and accuracy metrics, shared by bench, eval and sweep."""
