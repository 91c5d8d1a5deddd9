-- Deletes a system refused (the ERP's 409 `still_referenced`: a customer its orders still
-- refer to). The record that could not be deleted is parked with `deleting` set: its pair
-- stays linked, its own changes wait, and the delete is sent again at `retry_at` (a backoff
-- that grows with the attempts) or as soon as an operator retries it; NULL `retry_at` means
-- the next run.
ALTER TABLE parked ADD COLUMN deleting BIGINT NOT NULL DEFAULT 0;
ALTER TABLE parked ADD COLUMN retry_at BIGINT;
