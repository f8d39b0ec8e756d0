-- Devices of switchboard_client (an entity's admin) keeping their state here: a state record
-- per device and a row per thread, each sealed by the device before it gets here.
CREATE TABLE IF NOT EXISTS device_state (
    device TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS device_threads (
    device TEXT NOT NULL,
    thread TEXT NOT NULL,
    row BLOB NOT NULL,
    PRIMARY KEY (device, thread)
);
