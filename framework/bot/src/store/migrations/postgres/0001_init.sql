-- The bot's state store (switchboard crate). Every row is keyed by the bot's device id, so one
-- database can serve several bots. Thread state is sealed (ChaCha20-Poly1305) before it gets here.
CREATE TABLE IF NOT EXISTS bot_threads (
    device TEXT NOT NULL,
    thread TEXT NOT NULL,
    version BIGINT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (device, thread)
);

CREATE TABLE IF NOT EXISTS bot_journal (
    device TEXT NOT NULL,
    thread TEXT NOT NULL,
    key TEXT NOT NULL,
    handled_at BIGINT NOT NULL,
    PRIMARY KEY (device, thread, key)
);
CREATE INDEX IF NOT EXISTS bot_journal_by_age ON bot_journal (device, handled_at);

CREATE TABLE IF NOT EXISTS bot_outbox (
    id BIGSERIAL PRIMARY KEY,
    device TEXT NOT NULL,
    thread TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (device, message_id)
);
CREATE INDEX IF NOT EXISTS bot_outbox_by_device ON bot_outbox (device, id);

CREATE TABLE IF NOT EXISTS bot_meta (
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (device, key)
);
