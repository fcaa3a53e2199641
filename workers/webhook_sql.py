"""The SQL of the webhook delivery runs (workers/webhook_delivery.py): the fan-out, the claim, the
write of a batch's outcomes, and the endpoints' bookkeeping. Each is one statement, so that a
batch costs a few round trips whatever its size."""

from domains.webhooks import PAYLOAD_SQL

DISPATCH = """
WITH taken AS (
    -- The backlog's first events taken off it (domains.EventBacklog): from the lowest seq the
    -- probe found, a range its primary key reads directly.
    DELETE FROM domains_eventbacklog
    WHERE seq IN (
        SELECT seq FROM domains_eventbacklog WHERE seq >= %(first)s ORDER BY seq LIMIT %(limit)s
    )
    RETURNING event_id AS id, seq, app_id, domain_id, type
), ev AS (
    -- An event deleted since (by hand: the retention takes its backlog row with it) is passed
    -- over: a delivery or mail line of it would fail its foreign key at commit, every time.
    SELECT taken.* FROM taken JOIN domains_event e ON e.id = taken.id
), fan AS (
    INSERT INTO domains_webhookdelivery (
        endpoint_id, event_id, seq, domain_id, state, attempts, next_attempt_at, give_up_at, created,
        last_error
    )
    SELECT e.id, ev.id, ev.seq, ev.domain_id, 'pending', 0, %(now)s, %(give_up_at)s, %(now)s, ''
    FROM ev JOIN domains_webhookendpoint e
        ON e.enabled AND (e.app_id = ev.app_id OR e.app_id IS NULL)
        AND (cardinality(e.event_types) = 0 OR ev.type = ANY(e.event_types))
    -- An event leaves the backlog once, in the transaction that makes its deliveries; still, a
    -- delivery there already (a backlog row put back by hand) is passed over rather than stopping
    -- every fan-out after it.
    ON CONFLICT (endpoint_id, seq) DO NOTHING
    RETURNING endpoint_id, domain_id, seq
), queued AS (
    -- Each delivery's queue, its cursor just before its first; one there already keeps its cursor
    -- and its time (it may be waiting out a backoff).
    INSERT INTO domains_webhookqueue (endpoint_id, domain_id, after_seq, next_attempt_at)
    SELECT endpoint_id, domain_id, min(seq) - 1, %(now)s::timestamptz FROM fan
    GROUP BY endpoint_id, domain_id
    ON CONFLICT (endpoint_id, domain_id) DO NOTHING
), told AS (
    -- Who hears of an event by mail: the app's owner, and staff users who asked for every app's
    -- (one who is both is told once: the insert passes over the second row).
    SELECT ev.id AS event_id, ev.seq, ev.type, a.owner_id AS user_id
    FROM ev JOIN domains_app a ON a.id = ev.app_id
    UNION ALL
    SELECT ev.id, ev.seq, ev.type, s.user_id
    FROM ev CROSS JOIN domains_notificationsettings s JOIN auth_user staff ON staff.id = s.user_id
    WHERE s.all_apps AND staff.is_staff
), mails AS (
    INSERT INTO domains_emailnotification (user_id, event_id, seq, created)
    SELECT t.user_id, t.event_id, t.seq, %(now)s
    FROM told t JOIN auth_user u ON u.id = t.user_id AND u.is_active AND u.email <> ''
    LEFT JOIN domains_notificationsettings s ON s.user_id = t.user_id
    WHERE CASE WHEN s.user_id IS NULL THEN t.type = ANY(%(default_mail_types)s)
          ELSE s.email_enabled AND t.type = ANY(s.event_types) END
    ON CONFLICT (user_id, event_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM fan), (SELECT count(*) FROM mails)
"""

# The lowest seq of the backlog, if any (an index probe).
FIRST_UNDISPATCHED = "SELECT seq FROM domains_eventbacklog ORDER BY seq LIMIT 1"

# A claim of due queues: of any endpoint but those of %(skip)s (CLAIM), or of one (CLAIM_ONE: a
# slow endpoint, a few at a time).
_CLAIM_TEMPLATE = f"""
WITH held AS (
    UPDATE domains_webhookqueue AS q SET lease_until = %(lease)s
    FROM (
        SELECT id FROM domains_webhookqueue
        WHERE next_attempt_at <= %(now)s AND (lease_until IS NULL OR lease_until <= %(now)s)
          AND {{which}}
        ORDER BY next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS due
    WHERE q.id = due.id
    RETURNING q.id, q.endpoint_id, q.domain_id, q.after_seq
)
SELECT h.id, d.id, h.endpoint_id, d.event_id::text, d.attempts, extract(epoch FROM d.give_up_at)::float8,
    {PAYLOAD_SQL}
FROM held h
LEFT JOIN LATERAL (
    SELECT * FROM domains_webhookdelivery first
    WHERE first.endpoint_id = h.endpoint_id AND first.domain_id = h.domain_id AND first.seq > h.after_seq
      AND first.state = 'pending'
    ORDER BY first.seq
    LIMIT 1
) AS d ON true
LEFT JOIN domains_event e ON e.id = d.event_id
"""  # noqa: S608 (PAYLOAD_SQL is a constant of the product)
CLAIM = _CLAIM_TEMPLATE.replace("{which}", "endpoint_id <> ALL(%(skip)s::bigint[])")
CLAIM_ONE = _CLAIM_TEMPLATE.replace("{which}", "endpoint_id = %(endpoint)s")

# What came of a batch, in one statement: each POST's attempt logged; each delivery written, and its
# queue let go (due again at once, or after a failure's backoff; its cursor past the delivery that
# ended, unless a redelivered one before it waits) or removed when nothing of it is pending any
# more, only while the run's token is still on the queue. (The statement's snapshot still sees the
# ended delivery pending: it is passed over.) The rows come as one JSON array (psycopg would adapt
# ten Python lists element by element): [queue id, delivery id, state, next attempt (epoch s),
# status code, latency ms, answer excerpt, error, sent, the queue's lease]. A row not sent (a
# request withdrawn before it started, or for a disabled endpoint) counts no attempt and logs none;
# one withdrawn keeps its delivery's last status and error.
WRITE = """
WITH v AS (
    SELECT (r->>0)::bigint AS queue, (r->>1)::bigint AS id, r->>2 AS state, (r->>3)::float8 AS next_at,
        (r->>4)::int AS code, (r->>5)::int AS latency, r->>6 AS excerpt, r->>7 AS error,
        (r->>8)::bool AS sent, (r->>9)::timestamptz AS lease
    FROM jsonb_array_elements(%(rows)s::jsonb) AS r
), logged AS (
    INSERT INTO domains_webhookattempt (delivery_id, at, status_code, latency_ms, response_excerpt, error)
    SELECT v.id, %(at)s, v.code, v.latency, v.excerpt, v.error
    -- A delivery deleted meanwhile (its endpoint removed during the send) has no log to add to.
    FROM v JOIN domains_webhookdelivery d ON d.id = v.id
    WHERE v.sent
), written AS (
    UPDATE domains_webhookdelivery AS d SET
        state = v.state,
        attempts = d.attempts + CASE WHEN v.sent THEN 1 ELSE 0 END,
        next_attempt_at = to_timestamp(v.next_at),
        delivered_at = CASE WHEN v.state = 'delivered' THEN %(now)s ELSE d.delivered_at END,
        last_status_code = CASE WHEN v.sent THEN v.code ELSE d.last_status_code END,
        last_error = CASE WHEN v.sent OR v.state <> 'pending' THEN v.error ELSE d.last_error END
    FROM v JOIN domains_webhookqueue q ON q.id = v.queue AND q.lease_until = v.lease
    WHERE d.id = v.id
    RETURNING v.queue, d.id, d.endpoint_id, d.domain_id, d.seq, d.state, d.next_attempt_at,
        q.after_seq AS cursor
), after AS (
    -- The queue's first pending delivery but the one written (a scan of the queue index from the
    -- cursor): one before the written one is a redelivery, and keeps the cursor where it is.
    SELECT w.queue, w.next_attempt_at AS retry_at,
        CASE WHEN w.state = 'pending' OR next.seq < w.seq THEN w.cursor ELSE w.seq END AS after_seq,
        w.state = 'pending' OR next.seq IS NOT NULL AS more
    FROM written w LEFT JOIN LATERAL (
        SELECT n.seq FROM domains_webhookdelivery n
        WHERE n.endpoint_id = w.endpoint_id AND n.domain_id = w.domain_id
          AND n.seq > w.cursor AND n.id <> w.id AND n.state = 'pending'
        ORDER BY n.seq
        LIMIT 1
    ) AS next ON true
), released AS (
    UPDATE domains_webhookqueue q SET lease_until = NULL, after_seq = a.after_seq,
        next_attempt_at = coalesce(a.retry_at, q.next_attempt_at)
    FROM after a
    WHERE q.id = a.queue AND a.more
)
DELETE FROM domains_webhookqueue q USING after a WHERE q.id = a.queue AND NOT a.more
"""

# Queues a claim found with nothing pending (their deliveries deleted meanwhile): removed, unless a
# delivery came since.
DROP_EMPTY = """
DELETE FROM domains_webhookqueue q
WHERE q.id = ANY(%(ids)s) AND q.lease_until = %(lease)s AND NOT EXISTS (
    SELECT 1 FROM domains_webhookdelivery d
    WHERE d.endpoint_id = q.endpoint_id AND d.domain_id = q.domain_id AND d.seq > q.after_seq
      AND d.state = 'pending'
)
"""

ENDPOINTS_ANSWERED = """
UPDATE domains_webhookendpoint SET last_success_at = %(now)s, failing_since = NULL
WHERE id = ANY(%(ids)s)
"""

ENDPOINTS_FAILING = """
UPDATE domains_webhookendpoint SET failing_since = %(now)s
WHERE id = ANY(%(ids)s) AND failing_since IS NULL
"""

DISABLE = """
UPDATE domains_webhookendpoint SET enabled = false, disabled_at = %(now)s, disabled_reason = %(reason)s
WHERE id = ANY(%(ids)s) AND enabled AND failing_since <= %(since)s
RETURNING id
"""

FAIL_PENDING = """
WITH queues AS (DELETE FROM domains_webhookqueue WHERE endpoint_id = ANY(%(ids)s))
UPDATE domains_webhookdelivery SET state = 'failed', next_attempt_at = NULL, last_error = %(reason)s
WHERE endpoint_id = ANY(%(ids)s) AND state = 'pending'
"""
