-- Bot instance leases: one instance of a device holds a thread at a time.
CREATE TABLE leases (
    device_id  TEXT NOT NULL,
    thread_id  TEXT NOT NULL,
    instance   TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, thread_id)
);
