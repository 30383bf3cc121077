"""The `recorder` command: run, demo, simulate, query, sql, queries.

Every error the user can cause (bad config, unknown query, bad parameter, missing dataset) ends
in one line on stderr naming the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
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


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def cmd_run(args) -> int:
    import trio

    from .supervisor import run_until_signal

    config = cfgmod.load(args.config)
    _setup_logging(config.log_level)
    trio.run(run_until_signal, config)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    _setup_logging("warning" if not args.verbose else "info")
    run_demo(args.seconds, Path(args.data) if args.data else None)
    return 0


def cmd_simulate(args) -> int:
    import trio

    from .simulators.base import SimSettings
    from .simulators.fleet import SIM_ENV, start_fleet

    _setup_logging("info")

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            fleet = await start_fleet(nursery, SimSettings(interval=args.interval, fault_every=args.fault_every))
            for name, url in fleet.urls().items():
                print(f"{name:24} {url}", flush=True)
            print("The simulators' own test credentials (not real ones), for a recorder config on loopback:",
                  flush=True)
            for key, value in SIM_ENV.items():
                print(f"  export {key}={value}", flush=True)
            if args.seconds:
                await trio.sleep(args.seconds)
                nursery.cancel_scope.cancel()

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_query(args) -> int:
    if args.name is None:
        return cmd_queries(args)
    q = queries.get(args.name)  # unknown name: error before opening anything
    with _open_dataset(args) as ds:
        print(render(ds.query(q.name, **_params(args.param)), args.format))
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recorder")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


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
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("simulate", help="serve all three venue simulators on loopback and print their URLs")
    sim.add_argument("--seconds", type=float, default=0, help="stop after this long (default: run until Ctrl-C)")
    sim.add_argument("--interval", type=float, default=0.1, help="seconds between pushes per connection")
    sim.add_argument("--fault-every", type=float, default=0.0, help="inject a random fault this often (seconds)")
    sim.set_defaults(func=cmd_simulate)

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
