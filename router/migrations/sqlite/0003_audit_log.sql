-- The tamper-evident audit log (see the PostgreSQL migration for the meaning of each column).
CREATE TABLE audit_log (
    chain_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    user_id TEXT,
    team TEXT,
    api_key_id TEXT,
    model TEXT,
    route TEXT,
    decision TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason_codes TEXT NOT NULL,
    entity_types TEXT NOT NULL,
    tokens_in BIGINT,
    tokens_out BIGINT,
    cost_micros BIGINT,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_id ON audit_log (id);

CREATE TABLE audit_checkpoints (
    chain_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (chain_id, seq)
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the Cordon audit log is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the Cordon audit log is append-only: DELETE is not allowed'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'the Cordon audit log is append-only: UPDATE is not allowed'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'the Cordon audit log is append-only: DELETE is not allowed'); END;
