#!/bin/bash
# Runs once in the primary container: the application role and a replication role.
set -e
psql -v ON_ERROR_STOP=1 -U postgres -d app <<SQL
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE ROLE admin LOGIN SUPERUSER PASSWORD 'admin';
CREATE ROLE replicator REPLICATION LOGIN PASSWORD 'replicator';
GRANT ALL ON DATABASE app TO app;
GRANT ALL ON SCHEMA public TO app;
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
