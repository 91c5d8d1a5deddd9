-- What started a run (`schedule`, `api`, `webhook`, `resync`, ...; empty for runs recorded
-- before), and the alert incidents `tether serve` has told its webhooks about and not yet
-- seen clear: one row per open incident, removed when its recovery is sent, so a restarted
-- server neither alerts again nor forgets to send the recovery.
ALTER TABLE runs ADD COLUMN run_trigger TEXT;

CREATE TABLE alert_incidents (
    incident TEXT NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    opened_at BIGINT NOT NULL
);
