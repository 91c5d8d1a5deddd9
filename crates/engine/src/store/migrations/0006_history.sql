-- The change log: one row per write the engine made, append-only (rows older than the
-- retention go at the end of each run; nothing else changes or removes a row). `changes` is
-- a JSON list of {field, old, new, why}: each field's value before and after and why it was
-- written. Rows are found through the global id (a record's story across its counterparts)
-- or by the record written.
CREATE TABLE history (
    id TEXT NOT NULL PRIMARY KEY,
    run_id TEXT,
    at BIGINT NOT NULL,
    mapping TEXT NOT NULL,
    identity TEXT NOT NULL,
    global_id TEXT NOT NULL,
    system TEXT NOT NULL,
    entity TEXT NOT NULL,
    record_id TEXT NOT NULL,
    action TEXT NOT NULL,
    changes TEXT NOT NULL
);

CREATE INDEX history_by_global ON history (identity, global_id, at);
CREATE INDEX history_by_record ON history (system, entity, record_id, at);
CREATE INDEX history_by_time ON history (at);
