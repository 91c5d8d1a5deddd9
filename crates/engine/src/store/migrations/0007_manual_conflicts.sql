-- Conflicts a person decides (the `manual` policy). A conflict is `decided` by its policy
-- when recorded, or `held` with no winner until someone resolves it; the choice (`{"take":
-- "source"}`, `{"take": "target"}` or `{"take": "value", "value": V}`) makes it `resolved`,
-- and the run that writes it makes it `applied`. The winner becomes optional, so the table is
-- made again (SQLite cannot drop a NOT NULL), keeping every conflict recorded before.
ALTER TABLE conflicts RENAME TO conflicts_before_manual;

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
    winner TEXT,
    at BIGINT NOT NULL,
    state TEXT NOT NULL,
    choice TEXT,
    resolved_at BIGINT,
    applied_at BIGINT
);

INSERT INTO conflicts (id, run_id, mapping, global_id, field, source_value, target_value,
    base_value, resolution, winner, at, state)
SELECT id, run_id, mapping, global_id, field, source_value, target_value, base_value,
    resolution, winner, at, 'decided'
FROM conflicts_before_manual;

DROP TABLE conflicts_before_manual;

CREATE INDEX conflicts_by_time ON conflicts (at);
CREATE INDEX conflicts_by_mapping ON conflicts (mapping, at);
CREATE INDEX conflicts_by_state ON conflicts (state, mapping);
