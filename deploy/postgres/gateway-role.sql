-- The role the gateway connects to PostgreSQL as, once an administrator has run the
-- migrations (start the gateway once as the database owner, or run `cordon check` + `serve`
-- with the owner's URL). It may append to and read the audit log, never change or remove a row:
-- the audit tables also carry triggers that refuse UPDATE, DELETE and TRUNCATE for everyone.
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/postgres/gateway-role.sql
-- then give the role a password (ALTER ROLE cordon_gateway PASSWORD '...') and use
--   postgres://cordon_gateway:...@host/db in [database] url.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cordon_gateway') THEN
        CREATE ROLE cordon_gateway LOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO cordon_gateway;
GRANT SELECT ON _sqlx_migrations TO cordon_gateway;
GRANT SELECT, INSERT ON audit_log, audit_checkpoints TO cordon_gateway;
-- API keys: created, listed and revoked (UPDATE of the revoked flag) by the gateway's CLI.
GRANT SELECT, INSERT, UPDATE ON api_keys TO cordon_gateway;
