#!/bin/sh
# First start: initdb with the official image's variables, create POSTGRES_DB; then run the
# server in the foreground as PID 1, listening on every interface with password auth.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != "postgres" ]; then
        # A socket-only start so no client connects before the database exists.
        pg_ctl --pgdata="$PGDATA" --wait --silent \
            --options="-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
        printf 'CREATE DATABASE "%s";\n' "$db" \
            | psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --host=/var/run/postgresql \
                --username="$user" --dbname=postgres
        pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
    fi
    echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi
if [ "$1" = "postgres" ]; then
    shift
    exec postgres -D "$PGDATA" -c listen_addresses='*' \
        -c unix_socket_directories=/var/run/postgresql "$@"
fi
exec "$@"
