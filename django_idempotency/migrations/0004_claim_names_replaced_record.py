"""On PostgreSQL, the claim function also names the dead record a claim took over.

Its claimed row, which carried only the store's time, now carries the replaced record's state
and expiry too (``DatabaseStorage`` reports a takeover or a retry after expiry from them).
The function keeps its arguments and its result's columns, so ``CREATE OR REPLACE`` swaps it
in one statement on a live database, and code from before this migration reads its row as
before; code from after it, against the old function, sees no replaced record. On other
databases this migration does nothing.
"""

from __future__ import annotations

from importlib import import_module

from django.db import migrations

from django_idempotency.migrations._postgresql import RunSQLOnPostgreSQL

# Frozen as of this migration, as 0002's are.
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
            -- The record taken over, if any (r is all NULL after an insert): its state and
            -- when it expired, so the engine can tell a takeover and a late retry apart.
            RETURN QUERY SELECT ts, true, NULL::bigint, r.state, NULL::varchar,
                NULL::varchar, r.expires_at, NULL::smallint, NULL::jsonb, NULL::bytea;
            RETURN;
        END IF;
    END LOOP;
    -- Contended: neither claimed nor a live record to answer with.
    RETURN QUERY SELECT ts, NULL::boolean, NULL::bigint, NULL::varchar, NULL::varchar,
        NULL::varchar, NULL::timestamptz, NULL::smallint, NULL::jsonb, NULL::bytea;
END
$$
"""

# What 0002 created, restored when this migration is reversed (frozen there).
_CLAIM_0002 = import_module("django_idempotency.migrations.0002_postgresql_functions")._CLAIM


class Migration(migrations.Migration):
    dependencies = [("django_idempotency", "0003_fingerprint_version")]

    operations = [
        RunSQLOnPostgreSQL(sql=[_CLAIM], reverse_sql=[_CLAIM_0002], elidable=False),
    ]
