-- The match keys of records each mapping has read, so a record that appears later can
-- find an existing counterpart that has not changed since (first link by match keys).
CREATE TABLE record_keys (
    mapping TEXT NOT NULL,
    side TEXT NOT NULL,
    record_id TEXT NOT NULL,
    match_key TEXT NOT NULL,
    PRIMARY KEY (mapping, side, record_id)
);
CREATE INDEX record_keys_by_key ON record_keys (mapping, side, match_key);
