"""Datasets for `netdsl run` and `netdsl predict`: MNIST-layout IDX files, .npz arrays,
image folders, CSV tables, CoNLL tagging files and label-TAB-text files (docs/data.md).

Every problem a user can cause surfaces as a DataError whose message names the file (and
line or sample), so the CLI can print it instead of a traceback; nothing is half-loaded.
"""
from .base import MAX_DATA_BYTES, STATS_PREFIX, DataError, Dataset
from .feed import Feed, compute_stats, make_feed, read_stats, stats_arrays
from .idx import (
    MAX_IDX_BYTES, MAX_IDX_DIMS, MNIST_FILES, MNIST_MIRRORS, MNIST_SHA256, NUM_CLASSES, as_images,
    as_rows, as_vectors, cache_dir, download_mnist, find_dataset, load_idx, load_idx_dir, load_mnist,
)
from .spec import KINDS, load_for_run, load_spec, parse_spec, saved_data

__all__ = [
    "KINDS", "MAX_DATA_BYTES", "MAX_IDX_BYTES", "MAX_IDX_DIMS", "MNIST_FILES", "MNIST_MIRRORS",
    "MNIST_SHA256", "NUM_CLASSES", "STATS_PREFIX", "DataError", "Dataset", "Feed", "as_images", "as_rows",
    "as_vectors", "cache_dir", "compute_stats", "download_mnist", "find_dataset", "load_idx",
    "load_for_run", "load_idx_dir", "load_mnist", "load_spec", "saved_data", "make_feed", "parse_spec", "read_stats", "stats_arrays",
]
