-- switchboard relay schema, SQLite.
CREATE TABLE devices (
    device_id     TEXT PRIMARY KEY NOT NULL,
    identity_key  BLOB NOT NULL,
    bundle        BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    next_seq      INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE entities (
    entity       TEXT PRIMARY KEY NOT NULL,
    admin_device TEXT NOT NULL REFERENCES devices (device_id),
    display_name TEXT NOT NULL
);

CREATE TABLE threads (
    thread_id TEXT PRIMARY KEY NOT NULL,
    entity    TEXT NOT NULL REFERENCES entities (entity),
    customer  TEXT NOT NULL REFERENCES devices (device_id),
    admin     TEXT NOT NULL REFERENCES devices (device_id),
    epoch     INTEGER NOT NULL DEFAULT 0,
    next_seq  INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE thread_members (
    thread_id TEXT NOT NULL REFERENCES threads (thread_id),
    device_id TEXT NOT NULL REFERENCES devices (device_id),
    PRIMARY KEY (thread_id, device_id)
);

CREATE TABLE inbox (
    device_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    thread_id  TEXT NOT NULL,
    thread_seq INTEGER NOT NULL,
    sender     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    payload    BLOB NOT NULL,
    PRIMARY KEY (device_id, seq)
);

CREATE TABLE nonces (
    device_id  TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, nonce)
);
CREATE INDEX nonces_expiry ON nonces (expires_at);
