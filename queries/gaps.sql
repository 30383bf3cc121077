-- gaps: the intervals where a feed carrying one market was not recording, from the sessions
--   table, within a time range: what a chart shades. A feed carries the market when it
--   recorded chance, trades or book rows for it.
-- param market: string. Market or event id.
-- param start: timestamp = 1970-01-01T00:00:00Z. Start of the range, inclusive.
-- param end: timestamp = now. End of the range, exclusive.
-- param venue: string = any. Only this venue.
-- columns: feed, venue, start, end, seconds, reason
-- A gap runs from the close of a feed's connection (overlapping connections merged, as in
-- coverage) to its next connection. A connection still open is not in sessions until it closes:
-- then the gap ends at the first row that feed recorded for the market after the last close.
-- reason is the close reason of the connection that ended before the gap. Times are clipped
-- to the range.
WITH rows_ AS (
    SELECT feed, venue, ts_recv FROM chance WHERE market = $market AND ($venue IS NULL OR venue = $venue)
    UNION ALL
    SELECT feed, venue, ts_recv FROM trades WHERE market = $market AND ($venue IS NULL OR venue = $venue)
    UNION ALL
    SELECT feed, venue, ts_recv FROM book WHERE market = $market AND ($venue IS NULL OR venue = $venue)
),
carriers AS (
    SELECT DISTINCT feed, venue FROM rows_
),
s AS (
    SELECT feed, venue, connected AS s, closed AS e, close_reason
    FROM sessions JOIN carriers USING (feed, venue)
),
ordered AS (
    SELECT *, max(e) OVER (PARTITION BY feed, venue ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
    FROM s
),
grouped AS (
    SELECT *, sum(CASE WHEN prev_end IS NULL OR s > prev_end THEN 1 ELSE 0 END)
        OVER (PARTITION BY feed, venue ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS island
    FROM ordered
),
islands AS (
    SELECT feed, venue, min(s) AS start, max(e) AS "end", arg_max(close_reason, e) AS reason
    FROM grouped
    GROUP BY feed, venue, island
),
raw_gaps AS (
    SELECT i.feed, i.venue, i."end" AS start,
        coalesce(lead(i.start) OVER (PARTITION BY i.feed, i.venue ORDER BY i.start),
                 (SELECT min(r.ts_recv) FROM rows_ r WHERE r.feed = i.feed AND r.venue = i.venue AND r.ts_recv > i."end"))
            AS "end",
        i.reason
    FROM islands i
),
clipped AS (
    SELECT feed, venue, greatest(start, $start) AS start, least("end", $end) AS "end", reason
    FROM raw_gaps
    WHERE "end" IS NOT NULL AND "end" > $start AND start < $end
)
SELECT feed, venue, start, "end", (epoch_us("end") - epoch_us(start)) / 1e6 AS seconds, reason
FROM clipped
ORDER BY start, feed
