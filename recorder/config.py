"""config.toml: storage, flush policy, and one [[feeds]] entry per connection.

Validation is strict: an unknown key, a wrong type, an unknown venue or stream, or a missing
environment variable named for a secret is a ConfigError naming the key's path, raised before
anything connects. Secrets never appear in the file: the file names environment variables.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Mapping

import attrs

from .errors import ConfigError
from .storage import FlushPolicy
from .store.settings import LakeSettings

VENUES = ("outpoll", "intots", "predictfun")
TRANSPORTS = ("websockets", "trio-websocket")


@attrs.frozen(kw_only=True)
class Opt:
    """One allowed key: its type(s), whether required, and its default."""

    type: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    item: type | None = None  # for lists: the type of each item


def check_table(table: Any, fields: Mapping[str, Opt], path: str) -> dict[str, Any]:
    """Check a TOML table against `fields`; return it with defaults filled in."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path} must be a table, got {type(table).__name__}")
    for key in table:
        if key not in fields:
            raise ConfigError(f"{path}.{key}: unknown key; allowed here: {', '.join(sorted(fields))}")
    out = {}
    for key, opt in fields.items():
        if key not in table:
            if opt.required:
                raise ConfigError(f"{path}.{key} is required")
            out[key] = opt.default
            continue
        value = table[key]
        types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{path}.{key} must be {want}, got {type(value).__name__} {value!r}")
        if opt.item is not None:
            for i, item in enumerate(value):
                if not isinstance(item, opt.item):
                    raise ConfigError(f"{path}.{key}[{i}] must be {opt.item.__name__}, got {item!r}")
        out[key] = value
    return out


def check_url(url: str, path: str) -> None:
    """A WebSocket URL with a scheme, a host and (if given) a numeric port."""
    if not re.match(r"^wss?://", url):
        raise ConfigError(f"{path} must start with ws:// or wss://, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigError(f"{path} is not a valid URL ({exc}): {url!r}") from None
    if not parts.hostname:
        raise ConfigError(f"{path} has no host: {url!r}")


def positive(value: float, path: str) -> float:
    if value <= 0:
        raise ConfigError(f"{path} must be positive, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class Secret:
    """A secret's environment variable and its value. repr() never shows the value."""

    env: str
    value: str = attrs.field(repr=False)


def secret_from_env(env_name: Any, path: str, environ: Mapping[str, str]) -> Secret:
    if not isinstance(env_name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name):
        raise ConfigError(f"{path} must name an environment variable, got {env_name!r}")
    value = environ.get(env_name)
    if not value:
        raise ConfigError(f"{path}: environment variable {env_name} is not set (it holds a secret: a key or a password)")
    return Secret(env=env_name, value=value)


@attrs.frozen(kw_only=True)
class FeedConfig:
    name: str
    venue: str
    url: str
    transport: str
    stale_seconds: float
    backoff_initial: float
    backoff_max: float
    healthy_seconds: float
    max_message_bytes: int
    spec: Any  # the venue's own parsed options (venues.<venue>.FeedSpec)
    secrets: tuple[Secret, ...] = ()


@attrs.frozen(kw_only=True)
class StorageConfig:
    root: Path
    journal: Path
    policy: FlushPolicy
    segment_bytes: int
    compact: bool = False  # the daemon compacts closed (before today, UTC) partitions itself
    compact_interval: float = 3600.0
    lake: LakeSettings | None = None  # set: a DuckLake lake instead of the plain dataset under root


@attrs.frozen(kw_only=True)
class HttpConfig:
    """The daemon's HTTP listener (/metrics, /healthz, /status): off unless [http] is given."""

    host: str
    port: int  # 0: any free port (tests)
    max_connections: int = 16
    request_timeout: float = 5.0
    storage_deadline: float = 120.0  # /healthz: a flush or fsync running longer than this is wedged


@attrs.frozen(kw_only=True)
class Config:
    storage: StorageConfig
    feeds: tuple[FeedConfig, ...]
    summary_interval: float
    log_level: str
    path: Path | None = None
    log_format: str = "text"
    http: HttpConfig | None = None


_STORAGE = {
    "root": Opt(type=str, required=True),
    "journal": Opt(type=str),
    "max_rows": Opt(type=int, default=100_000),
    "max_age_seconds": Opt(type=(int, float), default=60.0),
    "commit_interval_ms": Opt(type=(int, float), default=200),
    "segment_mb": Opt(type=(int, float), default=64),
    "compact": Opt(type=bool, default=False),
    "compact_interval_minutes": Opt(type=(int, float), default=60),
    "catalog": Opt(type=str),
    "password_env": Opt(type=str),
    "data_path": Opt(type=str),
    "lake_grace_minutes": Opt(type=(int, float), default=60),
    "lake_publish_ms": Opt(type=(int, float), default=1000),
    "max_memory_mb": Opt(type=(int, float), default=512),
}
_RECORDER = {
    "summary_interval_seconds": Opt(type=(int, float), default=60.0),
    "log_level": Opt(type=str, default="info"),
    "log_format": Opt(type=str, default="text"),
}
_HTTP = {
    "listen": Opt(type=str, default="127.0.0.1:9464"),
    "max_connections": Opt(type=int, default=16),
    "request_timeout_seconds": Opt(type=(int, float), default=5.0),
    "storage_deadline_seconds": Opt(type=(int, float), default=120.0),
}
_FEED_COMMON = {
    "name": Opt(type=str, required=True),
    "venue": Opt(type=str, required=True),
    "url": Opt(type=str),
    "transport": Opt(type=str, default="websockets"),
    "stale_seconds": Opt(type=(int, float), default=90.0),
    "backoff_initial_seconds": Opt(type=(int, float), default=1.0),
    "backoff_max_seconds": Opt(type=(int, float), default=30.0),
    "healthy_seconds": Opt(type=(int, float), default=60.0),
    "max_message_kb": Opt(type=int, default=1024),
}


def load(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(raw, base=path.parent, environ=os.environ if environ is None else environ, path=path)


MAX_MESSAGE_KB = 1024 * 1024  # a frame larger than 1 GiB is refused whatever the config says


def _directory(base: Path, value: str, name: str) -> Path:
    """A configured directory, absolute (relative to the config file's directory)."""
    if "\0" in value:
        raise ConfigError(f"{name} must be a path without NUL characters, got {value!r}")
    return (base / value).resolve()


def parse(raw: dict, *, base: Path = Path("."), environ: Mapping[str, str] = os.environ,
          path: Path | None = None) -> Config:
    top = check_table(raw, {"storage": Opt(type=dict, required=True), "recorder": Opt(type=dict, default={}),
                            "feeds": Opt(type=list, default=[]), "http": Opt(type=dict)}, "config")
    st = check_table(top["storage"], _STORAGE, "storage")
    root = _directory(base, st["root"], "storage.root")
    journal = _directory(base, st["journal"], "storage.journal") if st["journal"] else root / "_journal"
    policy = FlushPolicy(
        max_rows=int(positive(st["max_rows"], "storage.max_rows")),
        max_age=float(positive(st["max_age_seconds"], "storage.max_age_seconds")),
        commit_interval=positive(st["commit_interval_ms"], "storage.commit_interval_ms") / 1000,
        max_memory_bytes=int(positive(st["max_memory_mb"], "storage.max_memory_mb") * 1024 * 1024),
    )
    storage = StorageConfig(root=root, journal=journal, policy=policy,
                            segment_bytes=int(positive(st["segment_mb"], "storage.segment_mb") * 1024 * 1024),
                            compact=st["compact"],
                            compact_interval=positive(st["compact_interval_minutes"], "storage.compact_interval_minutes") * 60,
                            lake=parse_lake(st, base, environ))
    rec = check_table(top["recorder"], _RECORDER, "recorder")
    if rec["log_level"].lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"recorder.log_level must be debug, info, warning or error, got {rec['log_level']!r}")
    if rec["log_format"] not in ("text", "json"):
        raise ConfigError(f"recorder.log_format must be text or json, got {rec['log_format']!r}")
    feeds, names = [], set()
    for i, entry in enumerate(top["feeds"]):
        feed = parse_feed(entry, f"feeds[{i}]", environ)
        if feed.name in names:
            raise ConfigError(f"feeds[{i}].name: {feed.name!r} is used by another feed; names must be unique")
        names.add(feed.name)
        feeds.append(feed)
    return Config(storage=storage, feeds=tuple(feeds), summary_interval=float(rec["summary_interval_seconds"]),
                  log_level=rec["log_level"].lower(), path=path, log_format=rec["log_format"],
                  http=parse_http(top["http"]) if top["http"] is not None else None)


def parse_listen(value: str, path: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464', 'localhost:9464' or '0.0.0.0:9464' -> (host, port)."""
    import ipaddress

    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError
        if host != "localhost":
            ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{path} must be an IP address and a port, like \"127.0.0.1:9464\" or \"[::1]:9464\","
                          f" got {value!r}") from None
    return host, int(port)


def parse_http(table: Any) -> HttpConfig:
    h = check_table(table, _HTTP, "http")
    host, port = parse_listen(h["listen"], "http.listen")
    if h["max_connections"] < 1:
        raise ConfigError(f"http.max_connections must be at least 1, got {h['max_connections']!r}")
    return HttpConfig(host=host, port=port, max_connections=h["max_connections"],
                      request_timeout=float(positive(h["request_timeout_seconds"], "http.request_timeout_seconds")),
                      storage_deadline=float(positive(h["storage_deadline_seconds"], "http.storage_deadline_seconds")))


def parse_lake(st: dict, base: Path, environ: Mapping[str, str]) -> LakeSettings | None:
    """[storage] catalog / password_env / data_path: a DuckLake lake, or None (the plain dataset)."""
    catalog = st["catalog"]
    if catalog is None:
        for key in ("password_env", "data_path"):
            if st[key] is not None:
                raise ConfigError(f"storage.{key} is only for a lake: set storage.catalog too, or remove it")
        return None
    if not catalog.startswith("ducklake:postgres:"):
        raise ConfigError(f"storage.catalog must look like 'ducklake:postgres:host=... dbname=...', got {catalog!r}")
    if re.search(r"(^|\s)password\s*=", catalog, re.IGNORECASE):
        raise ConfigError("storage.catalog must not hold the password: put it in an environment variable and"
                          " name that variable in storage.password_env")
    data_path = st["data_path"]
    if not data_path:
        raise ConfigError("storage.data_path is required with storage.catalog (a directory shared by the"
                          " recorders, or s3://bucket/prefix/)")
    if not data_path.startswith("s3://"):
        data_path = str(_directory(base, data_path, "storage.data_path"))
    password = None
    if st["password_env"] is not None:
        password = secret_from_env(st["password_env"], "storage.password_env", environ).value
    if st["lake_publish_ms"] < 0:
        raise ConfigError(f"storage.lake_publish_ms must be 0 or more, got {st['lake_publish_ms']!r}")
    return LakeSettings(catalog=catalog, data_path=data_path, password_env=st["password_env"], password=password,
                        grace_seconds=positive(st["lake_grace_minutes"], "storage.lake_grace_minutes") * 60,
                        publish_seconds=st["lake_publish_ms"] / 1000)


def parse_feed(entry: Any, path: str, environ: Mapping[str, str]) -> FeedConfig:
    from .venues import registry

    if not isinstance(entry, dict):
        raise ConfigError(f"{path} must be a table")
    venue = entry.get("venue")
    if venue not in VENUES:
        raise ConfigError(f"{path}.venue must be one of {', '.join(VENUES)}, got {venue!r}")
    module = registry.module(venue)
    fields = {**_FEED_COMMON, **module.OPTIONS}
    values = check_table(entry, fields, path)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", values["name"]):
        raise ConfigError(f"{path}.name must be letters, digits, '.', '_' or '-', got {values['name']!r}")
    if values["transport"] not in TRANSPORTS:
        raise ConfigError(f"{path}.transport must be one of {', '.join(TRANSPORTS)}, got {values['transport']!r}")
    options = {k: values[k] for k in module.OPTIONS}
    spec, secrets = module.parse_spec(options, path, lambda key: secret_from_env(options[key], f"{path}.{key}", environ))
    url = values["url"] or module.default_url(spec)
    check_url(url, f"{path}.url")
    for key in ("stale_seconds", "backoff_initial_seconds", "backoff_max_seconds", "healthy_seconds"):
        positive(values[key], f"{path}.{key}")
    if not 1 <= values["max_message_kb"] <= MAX_MESSAGE_KB:
        raise ConfigError(f"{path}.max_message_kb must be from 1 to {MAX_MESSAGE_KB} (1 GiB), got {values['max_message_kb']!r}")
    return FeedConfig(
        name=values["name"], venue=venue, url=url, transport=values["transport"],
        stale_seconds=float(values["stale_seconds"]), backoff_initial=float(values["backoff_initial_seconds"]),
        backoff_max=float(values["backoff_max_seconds"]), healthy_seconds=float(values["healthy_seconds"]),
        max_message_bytes=values["max_message_kb"] * 1024, spec=spec, secrets=tuple(secrets),
    )
