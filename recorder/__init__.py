"""A recorder for prediction-market WebSocket feeds: journal first, Hive-partitioned Parquet, DuckDB."""

from .dataset import Dataset, open_dataset

__all__ = ["Dataset", "open_dataset"]
__version__ = "0.1.0"
