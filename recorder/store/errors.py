"""Errors of the storage seam."""

from __future__ import annotations


class StoreUnavailable(OSError):
    """The store cannot be reached for now (a lake's catalog is down or refused the commit).

    An OSError on purpose: the storage task treats it like a full disk. Nothing is dropped, the
    same flush is published again after `retry_interval`, and the episode is logged once when it
    starts and once when it ends. Its message never holds a password."""
