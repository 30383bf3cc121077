"""Errors the recorder raises on purpose, each naming what is wrong and what to do.

    RecorderError
    ├── ConfigError          bad config file, unknown key, wrong type, missing secret variable
    ├── DatasetError         missing or empty dataset, unreadable file
    ├── QueryError           unknown query, missing or malformed parameter, SQL error
    ├── JournalError         journal directory unusable (locked by another recorder, unreadable)
    ├── DecodeError          a frame a venue decoder cannot turn into records (goes to `rejects`)
    └── TransportError       connection-level failure: the feed reconnects
        ├── ConnectFailed    refused, DNS, TLS, or handshake rejected (carries the HTTP status)
        └── ConnectionClosed the peer closed (carries the close code and reason) or the socket broke

Anything else is a bug and is not caught by the reconnect loop.
"""

from __future__ import annotations


class RecorderError(Exception):
    """Base class of the recorder's own errors."""


class ConfigError(RecorderError):
    """The configuration is wrong; the message names the key path."""


class DatasetError(RecorderError):
    """The dataset root is missing, empty or holds unreadable files."""


class QueryError(RecorderError):
    """A named query or its parameters are wrong, or the SQL failed."""


class JournalError(RecorderError):
    """The journal cannot be used."""


class DecodeError(RecorderError):
    """A frame could not be decoded; the frame goes to the `rejects` table."""


class TransportError(RecorderError):
    """A connection-level failure; the feed reconnects after a backoff."""


class ConnectFailed(TransportError):
    """The connection or the WebSocket handshake failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConnectionClosed(TransportError):
    """The connection ended: closed by the peer, by us, or broken."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
