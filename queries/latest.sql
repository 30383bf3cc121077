-- latest: the latest probability of every market and outcome.
-- param venue: string = any. Only this venue.
-- param market: string = any. Only this market.
-- columns: venue, market, outcome, origin, probability, time, ts_recv
-- Time is ts_event when the venue sent one, else ts_recv.
SELECT venue, market, outcome, origin, probability, coalesce(ts_event, ts_recv) AS time, ts_recv
FROM chance
WHERE ($venue IS NULL OR venue = $venue)
  AND ($market IS NULL OR market = $market)
QUALIFY row_number() OVER (
    PARTITION BY venue, market, outcome
    ORDER BY coalesce(ts_event, ts_recv) DESC, ts_recv DESC, conn_id DESC, seq DESC
) = 1
ORDER BY venue, market, outcome
