"""Shared test helpers: a Trio test decorator with a hard time limit, and record factories."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def trio_test(timeout: float = 30.0, clock=None):
    """Run an async test under trio.run with a hard deadline (a hang fails instead of blocking)."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            async def main():
                with trio.fail_after(timeout):
                    await fn(*args, **kwargs)

            trio.run(main, clock=clock() if callable(clock) else clock)

        return wrapper

    return deco


@pytest.fixture
def tmp_root(tmp_path: Path) -> Path:
    return tmp_path
