"""Helpers for lake tests: settings for a fresh lake in the test PostgreSQL, and a store."""

from __future__ import annotations

import os
from pathlib import Path

from pgserver import PASSWORD_ENV

from recorder.store.lake import LakeStore
from recorder.store.settings import LakeSettings


def lake_settings(postgres, data_path: Path, *, grace_seconds: float = 3600.0) -> LakeSettings:
    return LakeSettings(catalog="ducklake:postgres:" + postgres.create_database(), data_path=str(data_path),
                        password_env=PASSWORD_ENV, password=os.environ[PASSWORD_ENV], grace_seconds=grace_seconds)


def lake_config_toml(settings: LakeSettings, root: Path, journal: Path | None = None) -> str:
    """The [storage] section of a config.toml for this lake."""
    lines = ["[storage]", f'root = "{root}"', f'catalog = "{settings.catalog}"', f'password_env = "{PASSWORD_ENV}"',
             f'data_path = "{settings.data_path}"']
    if journal is not None:
        lines.append(f'journal = "{journal}"')
    return "\n".join(lines) + "\n"


def lake_counts(settings: LakeSettings, sql: str):
    """Run SQL on a fresh read-only reader of the lake."""
    with LakeStore(settings).open_dataset() as ds:
        return ds.sql(sql).to_pylist()
