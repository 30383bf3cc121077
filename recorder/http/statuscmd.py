"""`recorder status`: fetch a running daemon's /status and print it as a table.

Exit status: 0 when every feed is subscribed and fresh, 1 when some feed is stale, down or backing
off, 2 when the daemon cannot be reached (one line on stderr), so it serves in cron or a check.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from ..errors import RecorderError
from .status import exit_code, render_table

DEFAULT_URL = "http://127.0.0.1:9464"


class Unreachable(RecorderError):
    """The daemon's /status could not be fetched or read."""


def fetch(url: str, *, timeout: float = 5.0) -> dict:
    target = url.rstrip("/") + "/status"
    if not target.startswith(("http://", "https://")):
        raise Unreachable(f"--url must start with http:// or https://, got {url!r}")
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            body = response.read(16 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        raise Unreachable(f"cannot read the recorder's status at {target}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach the recorder at {target}: {reason} (is it running with [http] listen?)") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise Unreachable(f"{target} did not answer with the recorder's status JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("feeds"), list):
        raise Unreachable(f"{target} did not answer with the recorder's status JSON")
    return doc


def url_from_config(path: str) -> str:
    """The address in a config's [http] section. Only that section is read: the feeds' secret
    variables need not be set in the shell that runs `recorder status`."""
    import tomllib

    from ..config import parse_http
    from ..errors import ConfigError

    try:
        raw = tomllib.loads(open(path).read())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if "http" not in raw:
        raise ConfigError(f"{path} has no [http] section: the daemon serves no status; add [http] listen")
    http = parse_http(raw["http"])
    host = "127.0.0.1" if http.host in ("0.0.0.0", "") else "::1" if http.host == "::" else http.host
    return f"http://{f'[{host}]' if ':' in host else host}:{http.port}"


def main(url: str) -> int:
    doc = fetch(url)
    print(render_table(doc))
    return exit_code(doc)
