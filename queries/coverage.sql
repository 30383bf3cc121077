-- coverage: per feed, the intervals the recorder was connected and the gaps between them,
--   from the sessions table (overlapping connections are merged).
-- param feed: string = any. Only this feed.
-- columns: feed, venue, state, start, end, seconds, sessions
-- state is 'recorded' or 'gap'. A connection still open is not listed until it closes.
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
)
SELECT feed, venue, state, start, "end", (epoch_us("end") - epoch_us(start)) / 1e6 AS seconds, sessions
FROM (
    SELECT feed, venue, 'recorded' AS state, start, "end", sessions FROM islands
    UNION ALL
    SELECT feed, venue, 'gap' AS state, start, "end", 0 AS sessions FROM gaps WHERE "end" IS NOT NULL
)
ORDER BY feed, start, state DESC
