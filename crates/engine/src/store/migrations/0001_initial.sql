-- The first state store schema. The same SQL runs on SQLite and PostgreSQL: times are
-- microseconds since the Unix epoch (UTC) in BIGINT columns, JSON values are text.

CREATE TABLE global_ids (
    identity TEXT NOT NULL,
    global_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (identity, global_id)
);

-- One record links to at most one global id per identity type (the primary key), and one
-- global id has at most one record per system entity (the unique constraint).
CREATE TABLE links (
    system TEXT NOT NULL,
    entity TEXT NOT NULL,
    record_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    global_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (system, entity, record_id, identity),
    UNIQUE (identity, global_id, system, entity),
    FOREIGN KEY (identity, global_id) REFERENCES global_ids (identity, global_id)
);

CREATE TABLE pair_states (
    mapping TEXT NOT NULL,
    global_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    base TEXT NOT NULL,
    base_hash TEXT NOT NULL,
    source_hash TEXT,
    source_modified_at BIGINT,
    target_hash TEXT,
    target_modified_at BIGINT,
    synced_at BIGINT NOT NULL,
    PRIMARY KEY (mapping, global_id)
);

CREATE TABLE cursors (
    mapping TEXT NOT NULL,
    side TEXT NOT NULL,
    system TEXT NOT NULL,
    entity TEXT NOT NULL,
    position TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (mapping, side, system, entity)
);

CREATE TABLE create_intents (
    id TEXT NOT NULL PRIMARY KEY,
    mapping TEXT NOT NULL,
    side TEXT NOT NULL,
    source_record_id TEXT NOT NULL,
    global_id TEXT NOT NULL,
    match_values TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    created_record_id TEXT,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);

CREATE INDEX create_intents_by_mapping_state ON create_intents (mapping, state);

CREATE TABLE parked (
    mapping TEXT NOT NULL,
    side TEXT NOT NULL,
    record_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    field TEXT,
    value TEXT,
    attempts BIGINT NOT NULL,
    first_parked_at BIGINT NOT NULL,
    last_tried_at BIGINT NOT NULL,
    PRIMARY KEY (mapping, side, record_id)
);

-- Flows and mappings are JSON arrays of names; run_mappings indexes a run by mapping.
CREATE TABLE runs (
    id TEXT NOT NULL PRIMARY KEY,
    flows TEXT NOT NULL,
    mappings TEXT NOT NULL,
    worker TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT,
    summary TEXT
);

CREATE INDEX runs_by_start ON runs (started_at);

CREATE TABLE run_mappings (
    mapping TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    started_at BIGINT NOT NULL,
    PRIMARY KEY (mapping, run_id)
);

CREATE INDEX run_mappings_by_start ON run_mappings (mapping, started_at);

CREATE TABLE conflicts (
    id TEXT NOT NULL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    mapping TEXT NOT NULL,
    global_id TEXT NOT NULL,
    field TEXT NOT NULL,
    source_value TEXT NOT NULL,
    target_value TEXT NOT NULL,
    base_value TEXT,
    resolution TEXT NOT NULL,
    winner TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE INDEX conflicts_by_time ON conflicts (at);
CREATE INDEX conflicts_by_mapping ON conflicts (mapping, at);

CREATE TABLE leases (
    mapping TEXT NOT NULL PRIMARY KEY,
    worker TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
