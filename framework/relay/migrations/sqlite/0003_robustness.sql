-- Messages posted, by their identity, so that a message posted again is stored once.
CREATE TABLE posted_messages (
    thread_id  TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    sender     TEXT NOT NULL,
    generation INTEGER NOT NULL,
    digest     BLOB NOT NULL,
    thread_seq INTEGER NOT NULL,
    recipients INTEGER NOT NULL,
    PRIMARY KEY (thread_id, epoch, sender, generation)
);
-- A device's role (for its rate limits) is looked up by device.
CREATE INDEX thread_members_device ON thread_members (device_id);
CREATE INDEX entities_admin ON entities (admin_device);
