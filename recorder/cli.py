"""The `recorder` command: run, demo, simulate, query, sql, queries, chart.

Every error the user can cause (bad config, unknown query, bad parameter, missing dataset) ends
in one line on stderr naming the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Before anything loads pyarrow: Arrow's C++ default pool (what the Parquet writer allocates from,
# whatever pyarrow.set_memory_pool says) becomes the C library's malloc. See supervisor.tune_arrow.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from . import config as cfgmod  # noqa: E402
from . import queries  # noqa: E402
from .errors import RecorderError  # noqa: E402
from .output import FORMATS, render  # noqa: E402

DEFAULT_CONFIG = "config.toml"


def _params(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecorderError(f"--param {item!r} must be written NAME=VALUE")
        out[key.strip()] = value
    return out


def _data_root(args) -> Path:
    if args.data:
        return Path(args.data)
    return cfgmod.load(args.config).storage.root


def _open_dataset(args):
    """The dataset to read: --data DIR (a plain dataset), else the config's storage (plain or lake)."""
    from .dataset import open_dataset

    return open_dataset(Path(args.data)) if args.data else open_dataset(config=args.config)


def _setup_logging(level: str = "info", fmt: str = "text") -> None:
    from .logfmt import setup

    setup(level, fmt)


def cmd_run(args) -> int:
    import trio

    from .supervisor import run_until_signal

    config = cfgmod.load(args.config)
    _setup_logging(config.log_level, config.log_format)
    trio.run(run_until_signal, config)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    _setup_logging("warning" if not args.verbose else "info")
    run_demo(args.seconds, Path(args.data) if args.data else None, serve=args.serve, port=args.port)
    return 0


def cmd_simulate(args) -> int:
    from .simulators.base import SimSettings
    from .simulators.fleet import SIM_ENV, start_fleet

    _setup_logging("info")

    async def start(nursery) -> dict[str, str]:
        fleet = await start_fleet(nursery, SimSettings(interval=args.interval, fault_every=args.fault_every))
        return fleet.urls()

    notes = ["The simulators' own test credentials (not real ones), for a recorder config on loopback:"]
    return _serve_urls(start, notes + [f"  export {key}={value}" for key, value in SIM_ENV.items()], args.seconds)


def _serve_urls(start, notes: list[str], seconds: float | None) -> int:
    """Run servers started by `start(nursery)` (which returns their URLs by name), print the URLs
    and the notes, and serve until Ctrl-C or for `seconds`."""
    import trio

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            for name, url in (await start(nursery)).items():
                print(f"{name:24} {url}", flush=True)
            for line in notes:
                print(line, flush=True)
            if seconds:
                await trio.sleep(seconds)
                nursery.cancel_scope.cancel()

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_replay(args) -> int:
    from .simulators.replay import ReplayServer, load_recording, parse_speed

    _setup_logging("info")
    speed = parse_speed(args.speed)
    # Only storage.root is read from a config here: its feeds' secrets need not be set.
    root = Path(args.data) if args.data else cfgmod.load(args.config, environ=_NoSecretsNeeded(os.environ)).storage.root
    recording = load_recording(root, start=args.start, end=args.end, feeds=tuple(args.feeds or ()))

    async def start(nursery) -> dict[str, str]:
        server = await nursery.start(ReplayServer(recording, speed=speed, listen=args.listen).run)
        return server.urls()

    return _serve_urls(start, ["Replay accepts any credentials and keeps none: point a recorder's feeds (url = ...) here."],
                       args.seconds)


def cmd_query(args) -> int:
    if args.name is None:
        return cmd_queries(args)
    q = queries.get(args.name)  # unknown name: error before opening anything
    with _open_dataset(args) as ds:
        print(render(ds.query(q.name, **_params(args.param)), args.format))
    return 0


def cmd_chart(args) -> int:
    import time

    from .charts import chart_data, check_output, render

    out = Path(args.output)
    check_output(out)  # a bad suffix fails before any query runs
    started = time.perf_counter()
    with _open_dataset(args) as ds:  # a plain dataset or a lake, like query and sql
        data = chart_data(ds, args.market, venue=args.venue, start=args.start, end=args.end, interval=args.interval)
    render(data, out)
    print(f"{out}: {data.title}; {len(data.gaps)} gaps; {out.stat().st_size:,} bytes in "
          f"{time.perf_counter() - started:.2f} s")
    return 0


def cmd_queries(args) -> int:
    for q in queries.catalog().values():
        print(f"{q.name}: {q.purpose}")
        for p in q.params:
            default = "required" if p.default is None else f"default {p.default}"
            print(f"    --param {p.name}=<{p.type}>  ({default}) {p.doc}")
    return 0


def cmd_compact(args) -> int:
    import datetime as dt

    from .compact import compact
    from .schema import TABLES

    tables = tuple(args.table) if args.table else TABLES
    for t in tables:
        if t not in TABLES:
            raise RecorderError(f"--table {t!r} is not a table; tables: {', '.join(TABLES)}")
    try:
        before = dt.date.fromisoformat(args.before) if args.before else None
    except ValueError:
        raise RecorderError(f"--before {args.before!r} is not a date like 2026-11-01") from None

    def progress(r) -> None:
        print(f"{r.partition}: {r.files_before} files -> {r.files_after}, {r.rows} rows, "
              f"{r.bytes_before / 1e6:.1f} MB -> {r.bytes_after / 1e6:.1f} MB in {r.seconds:.1f} s", flush=True)

    if not args.data and cfgmod.load(args.config).storage.lake is not None:
        return compact_lake(cfgmod.load(args.config).storage.lake)
    results = compact(_data_root(args), tables=tables, before=before, progress=progress)
    print(f"compacted {len(results)} partitions")
    return 0


def cmd_rebuild(args) -> int:
    from .rebuild import DERIVED, rebuild, select
    from .simulators.replay import parse_time

    # Rebuilding decodes; it never connects: a secret the config names need not be set.
    config = cfgmod.load(args.config, environ=_NoSecretsNeeded(os.environ))
    sel = select(config, tables=tuple(args.table or DERIVED), venue=args.venue,
                 start_us=parse_time(args.start, "--start"), end_us=parse_time(args.end, "--end"))

    def progress(r) -> None:
        print(f"{r.partition}: {r.rows_before} rows -> {r.rows_after} in {r.seconds:.1f} s", flush=True)

    if not args.data and config.storage.lake is not None:  # a lake: one catalog transaction
        from .store import open_store

        target = open_store(config.storage)
    else:
        target = Path(args.data) if args.data else config.storage.root
    results = rebuild(target, sel, progress=progress)
    print(f"rebuilt {len(results)} partitions")
    return 0


class _NoSecretsNeeded(dict):
    """The environment, with a placeholder for any variable that is not set (never sent anywhere)."""

    def get(self, key, default=None):
        return super().get(key) or "unset-not-needed-to-decode"


def compact_lake(settings) -> int:
    """`recorder compact` on a lake: DuckLake's merge, expiry and cleanup (store/maintenance.py)."""
    from .store.errors import StoreUnavailable
    from .store.maintenance import maintain

    try:
        r = maintain(settings)
    except StoreUnavailable as exc:
        raise RecorderError(f"{exc}; nothing was changed, run it again later") from None
    if r.skipped:
        print("another process is maintaining the lake (it holds the maintenance lock); nothing done")
        return 0
    print(f"lake: {r.merged} merges, {r.expired} snapshots expired, {r.deleted} old files deleted"
          f" in {r.seconds:.1f} s")
    return 0


def cmd_sql(args) -> int:
    with _open_dataset(args) as ds:
        print(render(ds.sql(args.text), args.format))
    return 0


def cmd_status(args) -> int:
    from .http import statuscmd

    url = args.url or (statuscmd.url_from_config(args.config) if args.config else statuscmd.DEFAULT_URL)
    return statuscmd.main(url)


def cmd_prometheus(args) -> int:
    from importlib import resources

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("alerts.yml", "alerts_test.yml", "prometheus.yml"):
        (out / name).write_text((resources.files("recorder.prometheus") / name).read_text())
        print(out / name)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    try:
        v = version("recorder")
    except PackageNotFoundError:  # run from a source tree that was never installed
        v = "unknown (not installed)"
    # setup.py builds it where a C compiler is found; without it books are read in Python (slower)
    return f"{v} (compiled part: {'built' if find_spec('recorder._speedups') else 'not built'})"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recorder", description="Record prediction-market WebSocket feeds to Parquet "
                                "and query them with DuckDB.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="record the feeds in the config until SIGINT/SIGTERM")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="simulated venues + the recorder on loopback, then sample queries")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to record (default: %(default)s)")
    demo.add_argument("--data", help="where to write the dataset (default: a new temporary directory)")
    demo.add_argument("--verbose", action="store_true", help="show the recorder's log")
    demo.add_argument("--serve", action="store_true", help="then keep recording and serve the live page (its URL is "
                      "printed) until Ctrl-C")
    demo.add_argument("--port", type=int, default=0, help="with --serve: the page's port on 127.0.0.1 (default: any "
                      "free port)")
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("simulate", help="serve all three venue simulators on loopback and print their URLs")
    sim.add_argument("--seconds", type=float, default=0, help="stop after this long (default: run until Ctrl-C)")
    sim.add_argument("--interval", type=float, default=0.1, help="seconds between pushes per connection")
    sim.add_argument("--fault-every", type=float, default=0.0, help="inject a fault this often (seconds), the kinds in turn")
    sim.set_defaults(func=cmd_simulate)

    rep = sub.add_parser("replay", help="serve a recorded dataset back over each venue's own WebSocket protocol")
    rep.add_argument("--data", help="dataset root (default: storage.root from --config)")
    rep.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    rep.add_argument("--start", help="replay frames received from this time (ISO 8601, UTC if no zone)")
    rep.add_argument("--end", help="replay frames received before this time")
    rep.add_argument("--speed", default="1", help="1 (as recorded), 10 (ten times faster), ... or max")
    rep.add_argument("--feeds", nargs="+", metavar="FEED", help="only these recorded feeds (private feeds are "
                     "replayed only when named here)")
    rep.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT of the first endpoint; the next ones "
                     "take the following ports (port 0: any free port) (default: %(default)s)")
    rep.add_argument("--seconds", type=float, default=0, help="stop after this long (default: run until Ctrl-C)")
    rep.set_defaults(func=cmd_replay)

    for name, helptext in (("query", "run a named query from queries/"), ("sql", "run any SQL over the table views")):
        q = sub.add_parser(name, help=helptext)
        if name == "query":
            q.add_argument("name", nargs="?", help="query name (omit to list them)")
            q.add_argument("--param", action="append", default=[], metavar="K=V", help="a query parameter")
        else:
            q.add_argument("text", help="the SQL; views: chance, trades, book, prices, account, raw, sessions, rejects")
        q.add_argument("--format", choices=FORMATS, default="table", help="output format (default: %(default)s)")
        q.add_argument("--data", help="dataset root (default: storage.root from --config)")
        q.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
        q.set_defaults(func=cmd_query if name == "query" else cmd_sql)

    comp = sub.add_parser("compact", help="merge each partition's files into one sorted file (safe while "
                          "recorders write and readers query)")
    comp.add_argument("--data", help="dataset root (default: storage.root from --config)")
    comp.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    comp.add_argument("--table", action="append", help="only this table (repeatable)")
    comp.add_argument("--before", help="only partitions dated before this day (YYYY-MM-DD), e.g. today's date")
    comp.set_defaults(func=cmd_compact)

    st = sub.add_parser("status", help="a running daemon's feeds and storage as a table; exit 0 all subscribed and "
                        "fresh, 1 some stale/down/backing off, 2 unreachable")
    st.add_argument("--url", help="the daemon's [http] address (default: from --config, else http://127.0.0.1:9464)")
    st.add_argument("--config", help="read the address from this config's [http] listen")
    st.set_defaults(func=cmd_status)

    prom = sub.add_parser("prometheus", help="write the Prometheus alert rules, their tests and an example "
                          "scrape config into DIR")
    prom.add_argument("dir", help="directory to write alerts.yml, alerts_test.yml and prometheus.yml into")
    prom.set_defaults(func=cmd_prometheus)

    chart = sub.add_parser("chart", help="draw one market's probability, book band, volume and recording gaps "
                           "to a PNG or a self-contained HTML file")
    chart.add_argument("--market", required=True, help="market or event id (as in the chance table)")
    chart.add_argument("--venue", help="only this venue (default: every venue that recorded the market)")
    chart.add_argument("--start", help="start of the range, inclusive: ISO 8601, epoch seconds or now "
                       "(default: the market's first recorded row)")
    chart.add_argument("--end", help="end of the range, exclusive (default: just after the market's last row)")
    chart.add_argument("--interval", help="bucket width: 1s, 5m, 1h ... (default: about 600 buckets over the range)")
    chart.add_argument("-o", "--output", required=True, help="output file; the suffix picks the format: .png or .html")
    chart.add_argument("--data", help="dataset root (default: storage.root from --config)")
    chart.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    chart.set_defaults(func=cmd_chart)
    reb = sub.add_parser("rebuild", help="re-derive the normalised tables from raw with the current decoders "
                         "(partitions swapped atomically, like compact; on a lake, in one catalog transaction)")
    reb.add_argument("--config", default=DEFAULT_CONFIG, help="config file: the feeds and their decoders' options "
                     "(default: %(default)s)")
    reb.add_argument("--data", help="dataset root (default: storage.root from --config)")
    reb.add_argument("--table", action="append", help="only this table (repeatable; default: every table derived "
                     "from raw)")
    reb.add_argument("--venue", help="only this venue's feeds")
    reb.add_argument("--start", help="only rows of frames received from this time (ISO 8601, UTC if no zone)")
    reb.add_argument("--end", help="only rows of frames received before this time")
    reb.set_defaults(func=cmd_rebuild)

    lst = sub.add_parser("queries", help="list the named queries and their parameters")
    lst.set_defaults(func=cmd_queries)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except RecorderError as exc:
        print(f"recorder: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
