-- trades: the trades of one market over a time range, oldest first.
-- param market: string. Market id.
-- param start: timestamp = 1970-01-01T00:00:00Z. Start of the range, inclusive.
-- param end: timestamp = now. End of the range, exclusive.
-- param venue: string = any. Only this venue.
-- param limit: integer = 100000. At most this many rows.
-- columns: venue, market, time, ts_event, ts_recv, event, outcome, side, price, size, notional, trader, trade_id, source
-- Time is ts_event when the venue sent one, else ts_recv.
SELECT
    venue, market, coalesce(ts_event, ts_recv) AS time, ts_event, ts_recv,
    event, outcome, side, price, size, notional, trader, trade_id, source
FROM trades
WHERE market = $market
  AND ($venue IS NULL OR venue = $venue)
  AND date BETWEEN CAST($start AS DATE) AND CAST($end AS DATE)
  AND coalesce(ts_event, ts_recv) >= $start
  AND coalesce(ts_event, ts_recv) < $end
ORDER BY time, ts_recv, conn_id, seq
LIMIT $limit
