-- The tamper-evident audit log: one row per request, chained per gateway instance (chain_id):
-- hash = SHA-256 over the chain id, the sequence number, the previous hash and the canonical
-- record (the `record` column). The other columns repeat fields of `record` for queries;
-- `cordon audit verify` checks that they agree with it.
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

-- Every N records and at shutdown: the chain head, signed with the instance's Ed25519 key.
CREATE TABLE audit_checkpoints (
    chain_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (chain_id, seq)
);

-- Append-only, whoever connects: UPDATE, DELETE and TRUNCATE are refused.
CREATE FUNCTION cordon_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the Cordon audit log is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION cordon_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION cordon_audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION cordon_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION cordon_audit_append_only();
