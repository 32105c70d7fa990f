"""On PostgreSQL, the claim and the completion as functions whose plans the server keeps.

``DatabaseStorage`` calls them on PostgreSQL instead of sending the same statements as text:
the server then plans each statement once per connection rather than on every request, and a
first request's read and claim take one round trip instead of two (docs/benchmarks.md). The
functions do what the portable SQL in ``storage/database.py`` does, statement for statement.
On other databases this migration does nothing.
"""

from __future__ import annotations

from django.db import migrations

from django_idempotency.migrations._postgresql import RunSQLOnPostgreSQL

# Frozen as of this migration; a later change to the functions is a later migration.
_TABLE = "django_idempotency_idempotencykey"

_CLAIM = f"""
CREATE OR REPLACE FUNCTION django_idempotency_claim(
    p_scope varchar, p_key varchar, p_fingerprint varchar, p_token varchar,
    p_method varchar, p_path text, p_lease interval, p_flush boolean
) RETURNS TABLE (
    o_now timestamptz, o_claimed boolean, o_id bigint, o_state varchar,
    o_fingerprint varchar, o_token varchar, o_expires_at timestamptz,
    o_status smallint, o_headers jsonb, o_body bytea
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ts timestamptz;
    r {_TABLE}%ROWTYPE;
BEGIN
    IF NOT p_flush THEN
        -- Local to the caller's transaction: the storage asks for it only in autocommit.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- A claim races at most a few times: each lost race means another request wrote the
    -- record, which the next read returns.
    FOR attempt IN 1..3 LOOP
        ts := clock_timestamp();
        SELECT * INTO r FROM {_TABLE} t WHERE t.scope = p_scope AND t.key = p_key;
        IF FOUND AND r.expires_at > ts THEN
            RETURN QUERY SELECT ts, false, r.id, r.state, r.fingerprint, r.token,
                r.expires_at, r.response_status, r.response_headers, r.response_body;
            RETURN;
        END IF;
        IF NOT FOUND THEN
            INSERT INTO {_TABLE} (scope, key, state, fingerprint, token, method, path,
                                  created_at, expires_at, response_headers, response_body)
            VALUES (p_scope, p_key, 'in_flight', p_fingerprint, p_token, p_method, p_path,
                    ts, ts + p_lease, '[]'::jsonb, ''::bytea)
            ON CONFLICT (scope, key) DO NOTHING;
        ELSE
            -- Take over a dead record, but only the one we read, and only while it is
            -- still dead: a concurrent completion moves expires_at into the future.
            UPDATE {_TABLE} SET state = 'in_flight', fingerprint = p_fingerprint,
                token = p_token, method = p_method, path = p_path, created_at = ts,
                expires_at = ts + p_lease, response_headers = '[]'::jsonb,
                response_body = ''::bytea, completed_at = NULL, response_status = NULL
            WHERE id = r.id AND token = r.token AND expires_at <= ts;
        END IF;
        IF FOUND THEN
            RETURN QUERY SELECT ts, true, NULL::bigint, NULL::varchar, NULL::varchar,
                NULL::varchar, NULL::timestamptz, NULL::smallint, NULL::jsonb, NULL::bytea;
            RETURN;
        END IF;
    END LOOP;
    -- Contended: neither claimed nor a live record to answer with.
    RETURN QUERY SELECT ts, NULL::boolean, NULL::bigint, NULL::varchar, NULL::varchar,
        NULL::varchar, NULL::timestamptz, NULL::smallint, NULL::jsonb, NULL::bytea;
END
$$
"""

_COMPLETE = f"""
CREATE OR REPLACE FUNCTION django_idempotency_complete(
    p_state varchar, p_completed_at timestamptz, p_expires_at timestamptz,
    p_status integer, p_headers jsonb, p_body bytea,
    p_scope varchar, p_key varchar, p_token varchar, p_raise boolean
) RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer;
BEGIN
    -- Fenced: only the claim's owner, only while in flight, only before its lease ends.
    UPDATE {_TABLE} SET state = p_state, completed_at = p_completed_at,
        expires_at = p_expires_at, response_status = p_status,
        response_headers = p_headers, response_body = p_body
    WHERE scope = p_scope AND key = p_key AND token = p_token AND state = 'in_flight'
        AND expires_at > clock_timestamp();
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 AND p_raise THEN
        -- Sent with the COMMIT that follows it: the error keeps that COMMIT from running.
        RAISE EXCEPTION 'the idempotency claim ended before its completion'
            USING ERRCODE = 'DI001';
    END IF;
    RETURN n;
END
$$
"""

_DROP = (
    "DROP FUNCTION IF EXISTS django_idempotency_claim("
    "varchar, varchar, varchar, varchar, varchar, text, interval, boolean)",
    "DROP FUNCTION IF EXISTS django_idempotency_complete("
    "varchar, timestamptz, timestamptz, integer, jsonb, bytea, varchar, varchar, varchar, boolean)",
)


class Migration(migrations.Migration):
    dependencies = [("django_idempotency", "0001_initial")]

    operations = [
        RunSQLOnPostgreSQL(sql=[_CLAIM, _COMPLETE], reverse_sql=_DROP, elidable=False),
    ]
