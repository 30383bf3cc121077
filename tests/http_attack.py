"""Hostile HTTP clients, run as a separate process (so the attack costs the recorder's event loop
only what serving it costs): `python http_attack.py URL SLOTS TIMEOUT` prints one JSON object.

    held    slowloris clients take all SLOTS connections (a byte every 0.3 s; a probe answered 503
            says they hold them all); then a flood of 400 concurrent connections, whose answers
            are counted (503 expected; any served must have finished after the first slowloris
            client was cut: `served_while_held` counts those that did not)
    cut     how long each slowloris client lasted before the server closed on it, and what it got
    mixed   then a flood of 200 concurrent requests, 4 of them 1 MB requests
    alone   then one 1 MB request
"""

from __future__ import annotations

import json
import sys

import trio

from httpclient import exchange, get
from test_http_listener import slowloris

HUGE = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"p" * (1 << 20) + b"\r\n\r\n"


async def one(url: str, raw: bytes | None, answers: dict, served_at: list | None = None) -> None:
    try:
        status = (await exchange(url, raw))[0] if raw else (await get(url, "/metrics"))[0]
    except OSError:  # refused by the kernel (accept queue full) before the listener saw it
        status = -1
    answers[status] = answers.get(status, 0) + 1
    if served_at is not None and status == 200:
        served_at.append(trio.current_time())


async def saturated(url: str) -> None:
    """Until a probe is refused with 503: every slot is held."""
    while (await get(url, "/healthz"))[0] != 503:
        await trio.sleep(0.05)


async def attack(url: str, slots: int) -> dict:
    held, mixed, alone, cut, served_at = {}, {}, {}, [], []
    async with trio.open_nursery() as nursery:
        loris = [await slowloris(nursery, url, 0.3) for _ in range(slots)]
        with trio.fail_after(10):
            await saturated(url)
        async with trio.open_nursery() as flood:
            for _ in range(400):
                flood.start_soon(one, url, None, held, served_at)
        for client in loris:
            got, seconds = await client.outcome()
            cut.append([got.decode("latin-1"), round(seconds, 3)])
        first_cut = min(client.closed_at for client in loris)
        # a request served while every slot was held would have finished before the first cut
        served_while_held = sum(t < first_cut for t in served_at)
        async with trio.open_nursery() as flood:
            for i in range(200):
                flood.start_soon(one, url, HUGE if i % 50 == 0 else None, mixed)
        await one(url, HUGE, alone)
    return {"held": held, "served_while_held": served_while_held, "cut": cut, "mixed": mixed, "alone": alone}


if __name__ == "__main__":
    print(json.dumps(trio.run(attack, sys.argv[1], int(sys.argv[2]))))
