-- Records whose counterpart was deleted while the mapping's delete policy is `unlink` (or
-- whose counterpart's delete a one-way mapping does not carry back): the pair is forgotten,
-- and the record that is left is not created again on the other side while its mapped
-- content stays as it was when the pair was forgotten. An edit of a mapped field makes it a
-- record to sync again.
CREATE TABLE unlinked (
    mapping TEXT NOT NULL,
    side TEXT NOT NULL,
    record_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    unlinked_at BIGINT NOT NULL,
    PRIMARY KEY (mapping, side, record_id)
);
