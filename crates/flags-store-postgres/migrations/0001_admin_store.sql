-- flagd's admin store. Keys use the "C" collation so the database sorts them byte by byte, as
-- the in-memory store and every Rust caller do.

-- An environment is a separate set of flags, segments, kills and overrides.
CREATE TABLE environments (
    key        text COLLATE "C" PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Flags and segments: the LaunchDarkly document as written, with key and version stamped in.
-- A deleted item stays as a tombstone row (deleted = true) so that creating the key again
-- continues its version, and a replica that saw the deletion does not ignore the new item.
CREATE TABLE flags (
    env        text COLLATE "C" NOT NULL REFERENCES environments (key),
    key        text COLLATE "C" NOT NULL,
    version    bigint NOT NULL CHECK (version > 0),
    archived   boolean NOT NULL DEFAULT false,
    deleted    boolean NOT NULL DEFAULT false,
    doc        jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env, key)
);

-- Finding the flags that name a prerequisite (before deleting, archiving or shrinking it).
CREATE INDEX flags_prerequisites ON flags USING gin ((doc -> 'prerequisites') jsonb_path_ops);

CREATE TABLE segments (
    env        text COLLATE "C" NOT NULL REFERENCES environments (key),
    key        text COLLATE "C" NOT NULL,
    version    bigint NOT NULL CHECK (version > 0),
    archived   boolean NOT NULL DEFAULT false,
    deleted    boolean NOT NULL DEFAULT false,
    doc        jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env, key)
);

-- The kill set.
CREATE TABLE killed_flags (
    env       text COLLATE "C" NOT NULL,
    flag_key  text COLLATE "C" NOT NULL,
    killed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env, flag_key),
    FOREIGN KEY (env, flag_key) REFERENCES flags (env, key)
);

-- Per-entity overrides: (flag, context kind, context key) -> variation.
CREATE TABLE overrides (
    env          text COLLATE "C" NOT NULL,
    flag_key     text COLLATE "C" NOT NULL,
    context_kind text COLLATE "C" NOT NULL,
    context_key  text COLLATE "C" NOT NULL,
    variation    integer NOT NULL CHECK (variation >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env, flag_key, context_kind, context_key),
    FOREIGN KEY (env, flag_key) REFERENCES flags (env, key)
);

-- The audit log. No foreign keys: entries outlive what they are about.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    env          text COLLATE "C",
    item_kind    text NOT NULL,
    item_key     text COLLATE "C" NOT NULL,
    action       text NOT NULL,
    actor_key_id bigint,
    actor_name   text NOT NULL,
    before       jsonb,
    after        jsonb,
    at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_by_env ON audit_log (env, id DESC);
CREATE INDEX audit_log_by_item ON audit_log (env, item_kind, item_key, id DESC);

-- API keys: only the SHA-256 of the secret is kept. env NULL means every environment.
CREATE TABLE api_keys (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('sdk', 'admin')),
    env           text COLLATE "C" REFERENCES environments (key),
    secret_sha256 text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- Every change, written in the same transaction as the write it records. Writes to one
-- environment hold that environment's row lock until they commit, so within an environment
-- seq values become visible in increasing order and a reader can resume from the last it saw.
CREATE TABLE changes (
    seq     bigserial PRIMARY KEY,
    env     text COLLATE "C" NOT NULL REFERENCES environments (key),
    key     text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    kind    jsonb NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX changes_by_env ON changes (env, seq);
