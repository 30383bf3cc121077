-- coverage: per feed, the intervals the recorder was connected and the gaps between them,
--   from the sessions table (overlapping connections are merged).
-- param feed: string = any. Only this feed.
-- columns: feed, venue, state, start, end, seconds, sessions, filled, backfill_rows
-- state is 'recorded' or 'gap'. A connection still open is not listed until it closes.
-- For a gap, filled says whether the connection that ended it got the gap's history from the
-- venue (chance rows with source 'backfill': Outpoll chance feeds ask for it on reconnecting),
-- and backfill_rows how many rows that added; both are null on recorded intervals.
WITH s AS (
    SELECT feed, venue, connected AS s, closed AS e
    FROM sessions
    WHERE ($feed IS NULL OR feed = $feed)
),
ordered AS (
    SELECT *, max(e) OVER (PARTITION BY feed ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
    FROM s
),
grouped AS (
    SELECT *, sum(CASE WHEN prev_end IS NULL OR s > prev_end THEN 1 ELSE 0 END)
        OVER (PARTITION BY feed ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS island
    FROM ordered
),
islands AS (
    SELECT feed, any_value(venue) AS venue, min(s) AS start, max(e) AS "end", count(*) AS sessions
    FROM grouped
    GROUP BY feed, island
),
gaps AS (
    SELECT feed, venue, "end" AS start, lead(start) OVER (PARTITION BY feed ORDER BY start) AS "end"
    FROM islands
),
backfilled AS (  -- per connection: the backfill rows it received, keyed by when it connected
    SELECT s.feed, s.connected, count(*) AS n
    FROM sessions s JOIN chance c ON c.feed = s.feed AND c.conn_id = s.conn_id AND c.source = 'backfill'
    WHERE ($feed IS NULL OR s.feed = $feed)
    GROUP BY ALL
)
SELECT feed, venue, state, start, "end", (epoch_us("end") - epoch_us(start)) / 1e6 AS seconds, sessions,
       filled, backfill_rows
FROM (
    SELECT feed, venue, 'recorded' AS state, start, "end", sessions, NULL::BOOLEAN AS filled,
           NULL::BIGINT AS backfill_rows
    FROM islands
    UNION ALL
    SELECT g.feed, g.venue, 'gap' AS state, g.start, g."end", 0 AS sessions, coalesce(b.n, 0) > 0 AS filled,
           coalesce(b.n, 0) AS backfill_rows
    FROM gaps g LEFT JOIN backfilled b ON b.feed = g.feed AND b.connected = g."end"
    WHERE g."end" IS NOT NULL
)
ORDER BY feed, start, state DESC
