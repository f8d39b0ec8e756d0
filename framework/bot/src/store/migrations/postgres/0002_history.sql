-- Each thread's recent history in rows of their own (appended per event, pruned by position),
-- so that an event writes its new messages, not the whole history again. Sealed like the
-- thread state.
CREATE TABLE IF NOT EXISTS bot_history (
    device TEXT NOT NULL,
    thread TEXT NOT NULL,
    idx BIGINT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    PRIMARY KEY (device, thread, idx)
);
