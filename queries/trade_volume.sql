-- trade_volume: traded volume of one market per time bucket.
-- param market: string. Market id.
-- param start: timestamp = 1970-01-01T00:00:00Z. Start of the range, inclusive.
-- param end: timestamp = now. End of the range, exclusive.
-- param interval: interval = 1h. Bucket width.
-- param venue: string = any. Only this venue.
-- columns: venue, bucket, trades, size, notional, vwap
-- size and vwap count only trades that carry a size; notional only those that carry one.
SELECT
    venue,
    time_bucket(to_microseconds($interval), coalesce(ts_event, ts_recv)) AS bucket,
    count(*) AS trades,
    sum(size) AS size,
    sum(notional) AS notional,
    sum(price * size) / nullif(sum(CASE WHEN price IS NOT NULL THEN size END), 0) AS vwap
FROM trades
WHERE market = $market
  AND ($venue IS NULL OR venue = $venue)
  AND date BETWEEN CAST($start AS DATE) AND CAST($end AS DATE)
  AND coalesce(ts_event, ts_recv) >= $start
  AND coalesce(ts_event, ts_recv) < $end
GROUP BY ALL
ORDER BY venue, bucket
