"""config.toml: the checked-in file loads, and every kind of mistake names its key path."""

from __future__ import annotations

import copy

import pytest

from recorder import config
from recorder.errors import ConfigError

from conftest import ROOT

ENV = {"PREDICTFUN_API_KEY": "k", "OUTPOLL_API_KEY": "a", "OUTPOLL_API_SECRET": "c2VjcmV0", "PREDICTFUN_JWT": "j"}
BASE = {"storage": {"root": "data"}, "feeds": [
    {"name": "b", "venue": "outpoll", "stream": "order_book", "events": ["e"]},
    {"name": "o", "venue": "outpoll", "stream": "orders", "api_key_env": "OUTPOLL_API_KEY",
     "api_secret_env": "OUTPOLL_API_SECRET"},
    {"name": "c", "venue": "intots", "stream": "chart", "event_id": 42},
    {"name": "w", "venue": "predictfun", "topics": ["predictWalletEvents", "kalshiChance/1"],
     "api_key_env": "PREDICTFUN_API_KEY", "jwt_env": "PREDICTFUN_JWT"},
]}


def parse(raw, env=ENV):
    return config.parse(raw, environ=env)


def test_checked_in_config_loads():
    """config.toml at the top of the repo is valid and subscribes to every venue."""
    cfg = config.load(ROOT / "config.toml", environ=ENV)
    assert {f.venue for f in cfg.feeds} == {"outpoll", "intots", "predictfun"}
    assert cfg.storage.root == (ROOT / "data").resolve()


def test_defaults_and_urls():
    """Defaults fill in; each stream gets its venue's endpoint; ids become strings."""
    cfg = parse(BASE)
    book, orders, chart, wallet = cfg.feeds
    assert book.url == "wss://order-book.outpoll.com/event/ws" and book.transport == "websockets"
    assert orders.url == "wss://order-service.outpoll.com/order/ws"
    assert chart.url == "wss://api.intots.com/api/v1/ws/events/42/chart" and chart.spec.event_id == "42"
    assert wallet.url == "wss://ws.predict.fun/ws"
    assert cfg.storage.journal == cfg.storage.root / "_journal"


def mutate(path, value):
    raw = copy.deepcopy(BASE)
    target = raw
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize("path, value, message", [
    (("storage", "rooot"), "x", "storage.rooot: unknown key"),
    (("storage", "root"), KeyError, "storage.root is required"),
    (("storage", "max_rows"), "many", "storage.max_rows must be int"),
    (("storage", "max_age_seconds"), -1, "storage.max_age_seconds must be positive"),
    (("storage", "root"), "data\0", "storage.root must be a path without NUL characters"),
    (("storage", "journal"), "\0", "storage.journal must be a path without NUL characters"),
    (("feeds", 0, "venue"), "kalshi", "feeds[0].venue must be one of"),
    (("feeds", 0, "stream"), "books", "feeds[0].stream must be one of"),
    (("feeds", 0, "events"), [], "feeds[0].events must list at least one"),
    (("feeds", 0, "events"), [1], "feeds[0].events[0] must be str"),
    (("feeds", 0, "colour"), "red", "feeds[0].colour: unknown key"),
    (("feeds", 0, "transport"), "carrier-pigeon", "feeds[0].transport must be one of"),
    (("feeds", 0, "max_message_kb"), 0, "feeds[0].max_message_kb must be from 1 to 1048576"),
    (("feeds", 0, "max_message_kb"), 2**53, "feeds[0].max_message_kb must be from 1 to 1048576"),
    (("feeds", 0, "url"), "http://x", "feeds[0].url must start with ws:// or wss://"),
    (("feeds", 0, "url"), "ws://h:port/x", "feeds[0].url is not a valid URL"),
    (("feeds", 1, "api_secret_env"), KeyError, "feeds[1].api_secret_env is required"),
    (("feeds", 2, "event_id"), KeyError, "feeds[2].event_id is required"),
    (("feeds", 2, "symbol"), "BTC", "feeds[2].symbol does not apply"),
    (("feeds", 2, "outcomes"), ["Yes"], "feeds[2].outcomes must name at least two outcomes"),
    (("feeds", 2, "outcomes"), ["Yes", "YES"], "feeds[2].outcomes must name each outcome once"),
    (("feeds", 2, "outcomes"), ["Yes", 2], "feeds[2].outcomes[1] must be str"),
    (("feeds", 3, "topics"), ["predictWalletEvents/eyJabc"], "feeds[3].topics[0]: write the wallet topic"),
    (("feeds", 3, "topics"), ["nope/1"], "feeds[3].topics[0]: unknown topic 'nope'"),
    (("feeds", 3, "jwt_env"), KeyError, "feeds[3].jwt_env is required"),
    (("feeds", 1, "name"), "b", "feeds[1].name: 'b' is used by another feed"),
])
def test_mistakes_name_the_key(path, value, message):
    """Each mistake is a ConfigError whose message starts from the key's path."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(mutate(path, value))


def test_missing_secret_variable_is_named_without_a_value():
    """A missing environment variable is named; no secret value appears in any error."""
    env = {k: v for k, v in ENV.items() if k != "OUTPOLL_API_SECRET"}
    with pytest.raises(ConfigError, match="feeds\\[1\\].api_secret_env: environment variable OUTPOLL_API_SECRET is not set"):
        parse(BASE, env)


def test_secrets_do_not_show_in_repr():
    """A loaded secret never shows in the config's repr (which could reach a log)."""
    cfg = parse(BASE)
    text = repr(cfg)
    for value in ENV.values():
        assert f"'{value}'" not in text


def test_bad_toml_and_missing_file(tmp_path):
    """Unreadable files and invalid TOML are ConfigErrors naming the file."""
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage\nroot=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
