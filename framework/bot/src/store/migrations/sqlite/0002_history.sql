-- Each thread's recent history in rows of their own (appended per event, pruned by position),
-- so that an event writes its new messages, not the whole history again. Sealed like the
-- thread state.
CREATE TABLE IF NOT EXISTS bot_history (
    device TEXT NOT NULL,
    thread TEXT NOT NULL,
    idx INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (device, thread, idx)
);
