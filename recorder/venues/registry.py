"""Venue name -> venue module. Each module provides:

    OPTIONS: dict[str, config.Opt]           its [[feeds]] keys beyond the common ones
    parse_spec(options, path, secret)        -> (FeedSpec, [Secret])  (ConfigError on bad values)
    default_url(spec) -> str
    make_decoder(spec) -> Decoder
    make_protocol(spec, secrets, url) -> Protocol
    handshake_headers(spec, secrets) -> list[(name, value)]
"""

from __future__ import annotations

import importlib
from types import ModuleType


def module(venue: str) -> ModuleType:
    return importlib.import_module(f"recorder.venues.{venue}")
