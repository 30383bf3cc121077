-- book_band: one market's best bid and best ask per outcome, resampled to fixed buckets (the
--   last book state in each bucket): the band a chart draws around the probability line.
-- param market: string. Market or event id.
-- param start: timestamp = 1970-01-01T00:00:00Z. Start of the range, inclusive.
-- param end: timestamp = now. End of the range, exclusive.
-- param interval: interval = 1m. Bucket width: 30s, 1m, 5m, 1h, 1d ...
-- param venue: string = any. Only this venue.
-- columns: venue, outcome, bucket, best_bid, best_ask, count
-- Time is ts_event when the venue sent one, else ts_recv. Book states without a bid or an ask
-- are left out.
WITH states AS (
    SELECT venue, outcome, best_bid, best_ask, coalesce(ts_event, ts_recv) AS t, ts_recv, conn_id, seq
    FROM book
    WHERE market = $market
      AND ($venue IS NULL OR venue = $venue)
      AND date BETWEEN CAST($start AS DATE) AND CAST($end AS DATE)
      AND coalesce(ts_event, ts_recv) >= $start
      AND coalesce(ts_event, ts_recv) < $end
      AND best_bid IS NOT NULL AND best_ask IS NOT NULL
)
SELECT
    venue,
    outcome,
    time_bucket(to_microseconds($interval), t) AS bucket,
    arg_max(best_bid, (t, ts_recv, conn_id, seq)) AS best_bid,
    arg_max(best_ask, (t, ts_recv, conn_id, seq)) AS best_ask,
    count(*) AS count
FROM states
GROUP BY ALL
ORDER BY venue, outcome, bucket
