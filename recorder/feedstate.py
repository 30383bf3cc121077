"""What a feed is doing, for the daemon's window (/metrics, /status): its connection state, why
its connections ended, how long it was not connected, and when each subscription last sent data.

The feed updates a FeedState at connection events (connect attempt, subscribed, closed, backing
off), never per frame. Per-subscription data times are the feed's own staleness bookkeeping
(a dict the read loop already keeps, refreshed at most every 5% of `stale_seconds`): this module
only remembers them across reconnects, so a subscription that stays silent through a reconnect
keeps ageing instead of starting again from zero.

Readers call `view(now_mono, now_wall)`: a frozen snapshot, with the state derived at that moment
(a subscribed feed whose last frame or some subscription is older than `stale_seconds` is "stale").
"""

from __future__ import annotations

from typing import Iterable

import attrs

# Why a connection ended: a small fixed set (a label of recorder_connections_total).
REASONS = ("closed", "dropped", "stale", "auth_rejected", "refused", "stopped")
STATES = ("connecting", "subscribed", "backing off", "stale")


@attrs.frozen(kw_only=True)
class FeedView:
    """A feed's state at one instant (times: wall-clock unix seconds; ages: seconds)."""

    name: str
    venue: str
    state: str
    conn_id: str | None
    since: float
    next_reconnect: float | None
    up: bool
    connections: dict[str, int]
    gap_seconds: float
    subscriptions: dict[str, float]  # subscription -> seconds since its last data
    stale_seconds: float


@attrs.define
class FeedState:
    """Mutable, owned by one Feed; updated at connection events only."""

    name: str
    venue: str
    stale_seconds: float
    subscriptions: tuple[str, ...]
    started_mono: float  # trio clock when the feed started
    since: float  # wall clock of the last phase change
    phase: str = "connecting"  # connecting | backing off (subscribed is derived from `up`)
    conn_id: str | None = None
    next_reconnect: float | None = None
    up: int = 0  # connections open and subscribed (two during a venue-requested handover)
    ended: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(REASONS, 0))
    down_since: float | None = None  # trio clock when `up` last fell to 0 (None while up)
    gap_total: float = 0.0  # seconds not up, before `down_since`
    seen_before: dict[str, float] = attrs.field(factory=dict)  # subscription -> trio time of its last data
    live: dict[str, float] = attrs.field(factory=dict)  # the open connection's own last-data dict
    live_start: float = 0.0  # trio time the open connection's dict was filled (= "not seen yet")

    def __attrs_post_init__(self) -> None:
        self.down_since = self.started_mono

    # --- events (called by the feed) ---------------------------------------------------------

    def connecting(self, conn_id: str, wall: float) -> None:
        self.next_reconnect = None
        if not self.up:
            self.phase, self.conn_id, self.since = "connecting", conn_id, wall

    def subscribed(self, conn_id: str, mono: float, wall: float) -> None:
        self.up += 1
        self.conn_id = conn_id
        if self.up == 1:
            self.since = wall
            if self.down_since is not None:
                self.gap_total += mono - self.down_since
                self.down_since = None

    def watching(self, last_data: dict[str, float], mono: float) -> None:
        """The new connection's per-subscription last-data dict (the read loop updates it)."""
        self.forget_live()
        self.live, self.live_start = last_data, mono

    def ended_connection(self, reason: str, was_up: bool, mono: float, wall: float) -> None:
        if reason not in REASONS:
            raise ValueError(f"connection end reason {reason!r} is not one of {REASONS}")
        self.ended[reason] += 1
        if was_up:
            self.up -= 1
            if self.up == 0:
                self.down_since, self.phase, self.since = mono, "connecting", wall

    def backing_off(self, delay: float, wall: float) -> None:
        if not self.up:
            self.phase, self.since = "backing off", wall
        self.next_reconnect = wall + delay

    def forget_live(self) -> None:
        """Keep what the closing connection saw, so ages carry across reconnects."""
        for key, t in self.live.items():
            if t > self.live_start:
                self.seen_before[key] = t
        self.live, self.live_start = {}, 0.0

    # --- reading -----------------------------------------------------------------------------

    def last_data(self, key: str) -> float:
        """Trio time of the subscription's last data (the feed's start if it never sent any)."""
        t = self.live.get(key)
        if t is not None and t > self.live_start:
            return t
        return self.seen_before.get(key, self.started_mono)

    def view(self, now_mono: float, now_wall: float, last_frame_age: float | None) -> FeedView:
        subs = {k: max(0.0, now_mono - self.last_data(k)) for k in self.subscriptions}
        gap = self.gap_total + (now_mono - self.down_since if self.down_since is not None else 0.0)
        return FeedView(name=self.name, venue=self.venue, state=derive_state(self, subs.values(), last_frame_age),
                        conn_id=self.conn_id, since=self.since, next_reconnect=self.next_reconnect,
                        up=self.up > 0, connections=dict(self.ended), gap_seconds=gap, subscriptions=subs,
                        stale_seconds=self.stale_seconds)


def derive_state(s: FeedState, sub_ages: Iterable[float], last_frame_age: float | None) -> str:
    if not s.up:
        return s.phase
    ages = [*sub_ages, *([last_frame_age] if last_frame_age is not None else [])]
    if any(a > s.stale_seconds for a in ages):
        return "stale"
    return "subscribed"
