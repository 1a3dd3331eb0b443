#!/bin/sh
# Create the splitlog role and the databases of user_service,
# expense_service and balance_service. The log service keeps its data in
# files on its own volume. The postgres image runs this once, when its data
# volume is first initialised.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=password="$SPLITLOG_DB_PASSWORD" <<'SQL'
CREATE ROLE splitlog LOGIN PASSWORD :'password';
CREATE DATABASE user_service OWNER splitlog;
CREATE DATABASE expense_service OWNER splitlog;
CREATE DATABASE balance_service OWNER splitlog;
SQL
