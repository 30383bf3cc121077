"""A recorder for prediction-market WebSocket feeds: journal first, Hive-partitioned Parquet, DuckDB.

`recorder.open_dataset(root)` and `recorder.Dataset` are imported lazily, so the daemon does not
load DuckDB (about 25 MB) unless something queries.
"""

__all__ = ["Dataset", "open_dataset"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'recorder' has no attribute {name!r}")
