"""A lake's settings, as `[storage]` in config.toml gives them (parsed by config.py)."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class LakeSettings:
    """Where the catalog and the data are. `catalog` never holds the password: that comes from
    the environment variable `password_env` names, held here but never shown by repr()."""

    catalog: str  # "ducklake:postgres:host=... dbname=... user=..."
    data_path: str  # an absolute directory, or s3://bucket/prefix/
    password_env: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    grace_seconds: float = 3600.0  # snapshots and replaced files kept this long (longer than any query)
    # a writer publishes (one catalog transaction) at most this often; flushes in between are held
    # back, durable and checkpointed, and published with the next (0: every flush at once)
    publish_seconds: float = 1.0

    @property
    def libpq(self) -> str:
        """The PostgreSQL connection string inside the catalog string."""
        return self.catalog.removeprefix("ducklake:").removeprefix("postgres:")

    @property
    def on_s3(self) -> bool:
        return self.data_path.startswith("s3://")

    def scrub(self, text: str) -> str:
        """`text` with the password (if any) replaced, for a log line or an error message."""
        return text.replace(self.password, "***") if self.password else text
