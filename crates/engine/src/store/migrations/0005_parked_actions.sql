-- Parked records an operator acts on. A record set aside (`tether parked skip`) keeps its row,
-- with when it was set aside and the hash of its content then: the engine does not try it
-- again while its content hashes the same. Each attempt is kept with its time and error, the
-- latest few per record.
ALTER TABLE parked ADD COLUMN skipped_at BIGINT;
ALTER TABLE parked ADD COLUMN skipped_hash TEXT;

CREATE TABLE parked_attempts (
    mapping TEXT NOT NULL,
    side TEXT NOT NULL,
    record_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (mapping, side, record_id, at)
);
