-- book_at: each outcome's book of one market as it stood at an instant (the last state at or
--   before it).
-- param market: string. Market or event id.
-- param at: timestamp = now. The instant.
-- param venue: string = any. Only this venue.
-- columns: venue, market, outcome, time, best_bid, best_ask, last, depth, bids, asks
-- Time is ts_event when the venue sent one, else ts_recv.
SELECT venue, market, outcome, coalesce(ts_event, ts_recv) AS time, best_bid, best_ask, last, depth, bids, asks
FROM book
WHERE market = $market
  AND ($venue IS NULL OR venue = $venue)
  AND date <= CAST($at AS DATE)
  AND coalesce(ts_event, ts_recv) <= $at
QUALIFY row_number() OVER (
    PARTITION BY venue, outcome
    ORDER BY coalesce(ts_event, ts_recv) DESC, ts_recv DESC, conn_id DESC, seq DESC
) = 1
ORDER BY venue, outcome
