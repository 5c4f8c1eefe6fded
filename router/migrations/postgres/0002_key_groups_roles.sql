-- What policies read about a key's holder besides owner and team: groups, roles and free-form
-- attributes (department, cost centre, ...), as JSON.
ALTER TABLE api_keys ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
