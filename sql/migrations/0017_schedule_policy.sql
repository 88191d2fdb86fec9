-- Schedule policy lives in the database, for the whole fleet, not per process:
-- * fallback_wait: how long Path C waits for a push receipt before the fallback SMS (it was each
--   dispatcher's PRECALL_FALLBACK_WAIT_S; a dispatcher with that variable set still honours it and
--   warns that it is deprecated);
-- * heartbeat_max_age: a dispatcher heard from within this long counts as alive (doctor, capacity;
--   dispatchers beat every 15 s, so the default allows two missed beats);
-- * max_lead: the longest lead a user may choose. 60 minutes is also the ceiling the SMS texts are
--   proven to fit one segment for (`precall templates check`), and the users table's CHECK
--   (1..60) stays as that absolute bound; the planning triggers' pre-filters read this column
--   instead of a hard-coded '70 minutes'.
ALTER TABLE precall.settings
    ADD COLUMN fallback_wait interval NOT NULL DEFAULT '30 seconds'
        CHECK (fallback_wait BETWEEN '1 second' AND '10 minutes'),
    ADD COLUMN heartbeat_max_age interval NOT NULL DEFAULT '45 seconds'
        CHECK (heartbeat_max_age >= '20 seconds'),
    ADD COLUMN max_lead interval NOT NULL DEFAULT '60 minutes'
        CHECK (max_lead BETWEEN '1 minute' AND '60 minutes');
