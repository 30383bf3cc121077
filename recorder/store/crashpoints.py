"""Named points of the commit protocol where a crash test can kill the process (a test seam).

`RECORDER_CRASH_AT=<point>[:<n>]` makes the n-th arrival (default the first) at `<point>` end the
process with os._exit(137), as abruptly as kill -9 and at an exact place. Unset, `reach()` is a
dictionary lookup. Points, in the order a flush meets them:

    files_written      the flush's files are durable, the checkpoint not yet written
    checkpointed       the checkpoint names the files; nothing published
    in_transaction     lake: files and ledger row added, COMMIT not yet sent
    catalog_committed  lake: COMMIT returned; the writer has not yet moved on
"""

from __future__ import annotations

import os

ENV = "RECORDER_CRASH_AT"
POINTS = ("files_written", "checkpointed", "in_transaction", "catalog_committed")
_seen: dict[str, int] = {}


def reach(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == int(nth or 1):
        os._exit(137)
