-- chance_series: one market's probability per venue, origin and outcome, resampled to fixed
--   buckets like chance_history (open, high, low, close, count), but with relayed chances kept
--   apart by origin (predict.fun relays Polymarket and Kalshi for one market): a chart's lines.
-- param market: string. Market or event id.
-- param start: timestamp = 1970-01-01T00:00:00Z. Start of the range, inclusive.
-- param end: timestamp = now. End of the range, exclusive.
-- param interval: interval = 1m. Bucket width: 30s, 1m, 5m, 1h, 1d ...
-- param venue: string = any. Only this venue (outpoll, intots, predictfun).
-- columns: venue, origin, outcome, bucket, open, high, low, close, count
-- Time is ts_event when the venue sent one, else ts_recv. Ties are broken by receive order.
WITH pts AS (
    SELECT venue, origin, outcome, probability, coalesce(ts_event, ts_recv) AS t, ts_recv, conn_id, seq
    FROM chance
    WHERE market = $market
      AND ($venue IS NULL OR venue = $venue)
      AND date BETWEEN CAST($start AS DATE) AND CAST($end AS DATE)
      AND coalesce(ts_event, ts_recv) >= $start
      AND coalesce(ts_event, ts_recv) < $end
)
SELECT
    venue,
    origin,
    outcome,
    time_bucket(to_microseconds($interval), t) AS bucket,
    arg_min(probability, (t, ts_recv, conn_id, seq)) AS open,
    max(probability) AS high,
    min(probability) AS low,
    arg_max(probability, (t, ts_recv, conn_id, seq)) AS close,
    count(*) AS count
FROM pts
GROUP BY ALL
ORDER BY venue, origin, outcome, bucket
