-- Pair states are found by the records a run read, not only by global id, so a run loads
-- the merge bases of what changed instead of every pair of a mapping.
CREATE INDEX pair_states_by_source ON pair_states (mapping, source_id);
CREATE INDEX pair_states_by_target ON pair_states (mapping, target_id);
