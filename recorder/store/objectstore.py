"""Object storage for a lake (`data_path = "s3://bucket/prefix/"`): pyarrow writes, DuckDB reads.

Credentials and endpoint come from the environment, as the AWS tools read them:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional), AWS_REGION (default
us-east-1) and AWS_ENDPOINT_URL (an S3-compatible server, e.g. http://127.0.0.1:9000; path-style
addressing is then used). They are handed to pyarrow's S3FileSystem for writing and to a
temporary DuckDB secret for httpfs (reading, merging); never logged.

An object appears whole when its upload completes, so a file is written under its final key
directly (no temporary name, no rename: object stores have none).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pyarrow.fs as pafs


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def filesystem(uri: str) -> tuple[pafs.S3FileSystem, str]:
    """The S3 filesystem for `uri` (s3://bucket/key) and the path pyarrow wants (bucket/key)."""
    endpoint = _env("AWS_ENDPOINT_URL")
    fs = pafs.S3FileSystem(access_key=_env("AWS_ACCESS_KEY_ID"), secret_key=_env("AWS_SECRET_ACCESS_KEY"),
                           session_token=_env("AWS_SESSION_TOKEN"), region=_env("AWS_REGION", "us-east-1"),
                           endpoint_override=endpoint,
                           scheme=urlsplit(endpoint).scheme if endpoint else "https")
    return fs, uri.removeprefix("s3://")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_secret_sql() -> str:
    """CREATE TEMPORARY SECRET for httpfs, from the same environment variables."""
    parts = ["TYPE s3", f"REGION {_quote(_env('AWS_REGION', 'us-east-1'))}"]
    if _env("AWS_ACCESS_KEY_ID"):
        parts += [f"KEY_ID {_quote(_env('AWS_ACCESS_KEY_ID'))}", f"SECRET {_quote(_env('AWS_SECRET_ACCESS_KEY', ''))}"]
    if _env("AWS_SESSION_TOKEN"):
        parts.append(f"SESSION_TOKEN {_quote(_env('AWS_SESSION_TOKEN'))}")
    endpoint = _env("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlsplit(endpoint)
        parts += [f"ENDPOINT {_quote(url.netloc)}", "URL_STYLE 'path'", f"USE_SSL {str(url.scheme == 'https').lower()}"]
    return f"CREATE TEMPORARY SECRET recorder_s3 ({', '.join(parts)})"


def secrets() -> tuple[str, ...]:
    """Values to scrub from messages."""
    return tuple(v for v in (_env("AWS_SECRET_ACCESS_KEY"), _env("AWS_SESSION_TOKEN")) if v)
