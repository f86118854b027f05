-- flags-export's objects live in the schema `flagd_export`. These migrations run with that
-- schema first on the search path, so their bookkeeping table (`_sqlx_migrations`) is
-- `flagd_export._sqlx_migrations`, apart from the one of flagd's own store in `public`.

-- Every events table an exporter has created, so that a later migration can change them all.
CREATE TABLE flagd_export.event_tables (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name)
);

-- Creates the events table `target_schema.target_table` unless it exists, and registers it.
-- The table's name is configuration, so its definition lives here, in one versioned place, and
-- the exporter calls this at start. Columns for what most queries filter or group on; `record`
-- keeps the whole record, so nothing a typed column leaves out is lost.
CREATE FUNCTION flagd_export.create_event_table(target_schema text, target_table text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    -- Two replicas starting together would otherwise race on the catalog.
    PERFORM pg_advisory_xact_lock(hashtext('flagd_export.create_event_table'));
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %I.%I (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            -- feature, custom, summary or metrics.
            kind text NOT NULL,
            creation_date timestamptz NOT NULL,
            -- summary: the start of the period.
            start_date timestamptz,
            -- feature and summary: the flag; custom: the event.
            key text,
            context_kind text,
            user_key text,
            variation text,
            version text,
            -- The value served (feature, summary) or measured (custom, metrics).
            value jsonb,
            -- feature: whether the application's default was served.
            default_served boolean,
            -- summary: the default the application passed.
            default_value jsonb,
            count bigint,
            context_kinds text[],
            -- custom: data the application attached.
            data jsonb,
            metric text,
            api text,
            source text NOT NULL,
            record jsonb NOT NULL
        )$ddl$, target_schema, target_table);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I (creation_date)',
        target_table || '_creation_date', target_schema, target_table);
    INSERT INTO flagd_export.event_tables (schema_name, table_name)
    VALUES (target_schema, target_table)
    ON CONFLICT DO NOTHING;
END
$fn$;
