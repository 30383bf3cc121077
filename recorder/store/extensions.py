"""DuckDB extensions from their PyPI wheels, loaded by file path, never downloaded.

The wheels `duckdb-extension-ducklake`, `duckdb-extension-postgres-scanner` and
`duckdb-extension-httpfs` each hold `extensions/v<duckdb version>/<name>.duckdb_extension`
inside their package. A connection made here has autoinstall and autoload off, so DuckDB never
reaches for the network; `INSTALL` is never called. (The wheel named `duckdb-extension-postgres`
ships a mislabelled binary that does not load: the postgres extension comes from
`-postgres-scanner`.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from ..errors import ConfigError

# extension name -> the module its wheel installs, and the pip requirement to name in errors
WHEELS = {
    "ducklake": ("duckdb_extension_ducklake", "duckdb-extension-ducklake"),
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "duckdb-extension-postgres-scanner"),
    "httpfs": ("duckdb_extension_httpfs", "duckdb-extension-httpfs"),
}


def extension_path(name: str) -> Path:
    """The extension binary inside its installed wheel, for the running DuckDB version."""
    module, requirement = WHEELS[name]
    spec = importlib.util.find_spec(module)
    want = f"{requirement}=={duckdb.__version__}"
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the DuckDB extension {name} is not installed: pip install 'recorder[lake]'"
                          f" (or {want})")
    path = Path(list(spec.submodule_search_locations)[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise ConfigError(f"{requirement} has no build for duckdb {duckdb.__version__} ({path} is missing);"
                          f" install {want}")
    return path


def connect(names: tuple[str, ...], *, database: str = ":memory:", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with these extensions loaded from their wheels, and UTC as time zone.
    `threads`: DuckDB's worker threads (default: one per core)."""
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if threads is not None:
        config["threads"] = threads
    con = duckdb.connect(database, config=config)
    for name in names:
        con.load_extension(str(extension_path(name)))
    con.execute("SET TimeZone = 'UTC'")
    return con
