"""Loopback simulators: real WebSocket servers speaking each venue's protocol (see PROTOCOLS.md),
with realistic random-walk data, enforced pings and heartbeats, and faults injected on demand.
Used by `recorder demo`, `recorder simulate` and the tests."""
