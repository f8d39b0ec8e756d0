-- A thread's outbox entries in commit order: read when an instance takes over a thread, so
-- that replies another instance committed go out before its own.
CREATE INDEX IF NOT EXISTS bot_outbox_by_thread ON bot_outbox (device, thread, id);
