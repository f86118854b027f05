-- Big-segment memberships, as LaunchDarkly's big-segment stores keep them: by the hashed context
-- key (base64 of the SHA-256 of the key), one row per context listed in one generation of one
-- segment, included or excluded. The primary key leads with (env, context_hash), the lookup
-- every evaluation of a big segment makes. `env` has no foreign key: an upload inserts millions of
-- rows, and a key check per row would cost more than the insert; flagd checks the environment
-- and the segment before an upload starts.
CREATE TABLE big_segment_members (
    env          text COLLATE "C" NOT NULL,
    context_hash text COLLATE "C" NOT NULL,
    segment      text COLLATE "C" NOT NULL,
    generation   bigint NOT NULL CHECK (generation > 0),
    included     boolean NOT NULL,
    PRIMARY KEY (env, context_hash, segment, generation)
);

-- When each environment's memberships were last known to be up to date (Unix milliseconds).
CREATE TABLE big_segments_synchronized (
    env             text COLLATE "C" PRIMARY KEY REFERENCES environments (key),
    synchronized_on bigint NOT NULL
);
