"""Datasets by name: bundled digits, users' image folders, and synthetic inputs for latency."""

from harness.data.datasets import Dataset, dataset_names, resolve_dataset

__all__ = ["Dataset", "dataset_names", "resolve_dataset"]
