#!/usr/bin/env bash
# Install (if missing) and start (if not already running) the backing services
# the dapr-rs test suites talk to. Idempotent: a second run only probes the
# fixed ports and reuses what answers.
#
# Everything listens on 127.0.0.1 only, on fixed ports the tests hard-code:
#   Redis       127.0.0.1:16379  no auth, no persistence
#   PostgreSQL  127.0.0.1:15432  user postgres (trust auth), database dapr_test
#   MariaDB     127.0.0.1:13306  user root, no password,     database dapr_test
#   NATS        127.0.0.1:14222  JetStream on, no auth, max_payload 8MB
#   RabbitMQ    127.0.0.1:15673  AMQP 0-9-1, user guest/guest, node dapr-rs-test, epmd on 127.0.0.1
#   Mosquitto   127.0.0.1:11883  MQTT 3.1.1/5, anonymous, no persistence
# Data and logs live under ${DAPR_RS_CACHE:-$HOME/.cache/dapr-rs}/services/<name>/.
# DAPR_RS_SERVICE_TIMEOUT (default 60) bounds each server's start-up, in seconds.
#
# Adding a service: write ensure_<name>() following the pattern below
# (install_pkgs -> probe port -> start daemon -> wait_for -> summary) and call
# it from main().
set -euo pipefail

CACHE_DIR="${DAPR_RS_CACHE:-$HOME/.cache/dapr-rs}"
SERVICES_DIR="$CACHE_DIR/services"
WAIT_TIMEOUT="${DAPR_RS_SERVICE_TIMEOUT:-60}" # seconds per service

REDIS_PORT=16379
PG_PORT=15432
PG_BIN=/usr/lib/postgresql/15/bin
MARIADB_PORT=13306
NATS_PORT=14222
RABBITMQ_PORT=15673
MOSQUITTO_PORT=11883
TEST_DB=dapr_test

log() { echo "test-services: $*" >&2; }
die() {
    echo "test-services: ERROR: $*" >&2
    exit 1
}
summary() { printf 'test-services: %-10s %-8s %s\n' "$1" "$2" "$3"; }

# ---------------------------------------------------------------- helpers --

SUDO=()
if [[ $EUID -ne 0 ]] && command -v sudo >/dev/null; then SUDO=(sudo); fi

APT_UPDATED=0
# install_pkgs PKG... : apt-get install the given Debian packages (apt-get
# update runs at most once per script run, and only when something is needed).
# A temporary policy-rc.d stops the packages' postinst from starting the
# distro-default servers (port 5432 / 3306) that we do not use.
install_pkgs() {
    log "installing Debian packages: $*"
    if ((!APT_UPDATED)); then
        "${SUDO[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    if ((added_policy)); then "${SUDO[@]}" rm -f "$policy"; fi
    ((rc == 0)) || die "apt-get install $* failed (exit $rc)"
}

# wait_for NAME LOGFILE CMD... : poll CMD until it succeeds or WAIT_TIMEOUT
# passes; on timeout show the end of the service's log and fail.
wait_for() {
    local name=$1 logfile=$2
    shift 2
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "$name did not accept connections within ${WAIT_TIMEOUT}s; last log lines ($logfile):"
            tail -n 30 "$logfile" >&2 2>/dev/null || true
            die "$name failed to start"
        fi
        sleep 0.3
    done
}

# as_user USER CMD... : run CMD (from /) as USER when we are root, else as ourselves.
as_user() {
    local user=$1
    shift
    if [[ $EUID -eq 0 ]]; then (cd / && runuser -u "$user" -- "$@"); else "$@"; fi
}

# own_dir USER DIR : create DIR owned by USER (mode 700), and make sure USER
# can reach it (a 700 $HOME would otherwise hide it from the daemon's user).
own_dir() {
    local user=$1 dir=$2
    mkdir -p "$dir"
    [[ $EUID -eq 0 ]] || return 0
    chown "$user:" "$dir"
    chmod 700 "$dir"
    # Walk from / down so only the directories that really block get o+x.
    local d="" part
    local -a parts
    IFS=/ read -ra parts <<<"${dir#/}"
    for part in "${parts[@]}"; do
        d="$d/$part"
        if ! runuser -u "$user" -- test -x "$d"; then
            log "granting traverse (o+x) on $d so '$user' can reach $dir"
            chmod o+x "$d"
        fi
    done
}

# ------------------------------------------------------------------ redis --

redis_ping() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

ensure_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        install_pkgs redis-server redis-tools
    fi

    local dir="$SERVICES_DIR/redis" state=reused
    if ! redis_ping; then
        state=started
        mkdir -p "$dir"
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
            --save "" --appendonly no --daemonize yes \
            --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            </dev/null >/dev/null
        wait_for Redis "$dir/redis.log" redis_ping
    fi
    local version
    version=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | tr -d '\r' | sed -n 's/^redis_version://p')
    summary redis "$state" "redis://127.0.0.1:$REDIS_PORT (v$version)"
}

# ------------------------------------------------------------- postgresql --

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
pg_psql() { "$PG_BIN/psql" -X -q -w -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

ensure_postgres() {
    [[ -x $PG_BIN/postgres && -x $PG_BIN/initdb && -x $PG_BIN/psql ]] ||
        install_pkgs postgresql-15 postgresql-client-15

    local dir="$SERVICES_DIR/postgres" state=reused
    local data="$dir/data" logfile="$dir/postgres.log"
    if ! pg_ready; then
        state=started
        own_dir postgres "$dir"
        if [[ ! -f $data/PG_VERSION ]]; then
            log "initdb $data"
            rm -rf "$data"
            as_user postgres "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust \
                -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
                {
                    tail -n 20 "$dir/initdb.log" >&2
                    die "PostgreSQL initdb failed"
                }
        fi
        # A hard-killed server leaves postmaster.pid behind; drop it unless its
        # PID is still a live postgres.
        local pid
        pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
        if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) != postgres ]]; then
            rm -f "$data/postmaster.pid"
        fi
        # -h: listen address, -k '': no unix socket (TCP only, no clash with a
        # system cluster), -F: fsync off (throwaway test data).
        as_user postgres "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -w -t "$WAIT_TIMEOUT" \
            -o "-h 127.0.0.1 -p $PG_PORT -k '' -F" start </dev/null >/dev/null ||
            {
                tail -n 30 "$logfile" >&2 2>/dev/null || true
                die "PostgreSQL failed to start"
            }
        wait_for PostgreSQL "$logfile" pg_ready
    fi

    if [[ -z $(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$TEST_DB'") ]]; then
        pg_psql -d postgres -c "CREATE DATABASE $TEST_DB"
    fi
    summary postgres "$state" "postgres://postgres@127.0.0.1:$PG_PORT/$TEST_DB ($(pg_psql -d "$TEST_DB" -tAc 'SHOW server_version'))"
}

# ---------------------------------------------------------------- mariadb --

maria_tcp() { mariadb --no-defaults --connect-timeout=3 -h127.0.0.1 -P"$MARIADB_PORT" -uroot "$@"; }
# Answers as soon as the server is up, even when our login would be refused.
maria_alive() { mariadb-admin --no-defaults --connect-timeout=2 -h127.0.0.1 -P"$MARIADB_PORT" -uroot ping; }

ensure_mariadb() {
    command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || install_pkgs mariadb-server mariadb-client
    local mariadbd
    mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)

    local dir="$SERVICES_DIR/mariadb" state=reused
    local data="$dir/data" logfile="$dir/mariadb.log" sock="$dir/mariadb.sock"
    local user
    user=$(id -un)
    [[ $EUID -ne 0 ]] || user=mysql

    if ! maria_alive >/dev/null 2>&1; then
        state=started
        own_dir "$user" "$dir"
        if [[ ! -d $data/mysql ]]; then
            log "mariadb-install-db $data"
            rm -rf "$data"
            mariadb-install-db --no-defaults --user="$user" --datadir="$data" \
                --auth-root-authentication-method=normal --skip-test-db \
                --skip-name-resolve >"$dir/install-db.log" 2>&1 ||
                {
                    tail -n 20 "$dir/install-db.log" >&2
                    die "mariadb-install-db failed"
                }
        fi
        # mariadbd has no daemon mode: detach it ourselves, with no fd of ours.
        setsid "$mariadbd" --no-defaults --user="$user" --datadir="$data" \
            --bind-address=127.0.0.1 --port="$MARIADB_PORT" --socket="$sock" \
            --pid-file="$dir/mariadb.pid" --log-error="$logfile" \
            --skip-name-resolve --skip-log-bin --innodb-flush-log-at-trx-commit=2 \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
            </dev/null >>"$logfile" 2>&1 &
        disown
        wait_for MariaDB "$logfile" maria_alive
    fi

    # Passwordless root over TCP. With --skip-name-resolve a TCP client from
    # 127.0.0.1 matches 'root'@'127.0.0.1'; a server started without it maps
    # 127.0.0.1 to 'root'@'localhost'. Make both work: mariadb-install-db's
    # default would give root@localhost unix_socket auth only. Apply through
    # TCP if that already works, else through our unix socket as OS root.
    local fix="CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        CREATE USER IF NOT EXISTS 'root'@'localhost' IDENTIFIED BY '';
        ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'localhost' WITH GRANT OPTION;
        CREATE DATABASE IF NOT EXISTS $TEST_DB;"
    if ! maria_tcp -e "$fix" 2>/dev/null; then
        { [[ -S $sock ]] && mariadb --no-defaults -S "$sock" -uroot -e "$fix"; } ||
            die "MariaDB on 127.0.0.1:$MARIADB_PORT is up but root cannot log in over TCP" \
                "without a password, and $sock could not fix it; stop that server or remove $dir"
    fi
    maria_tcp -e "SELECT 1" >/dev/null || die "MariaDB root login over TCP without a password fails"
    summary mariadb "$state" "mysql://root@127.0.0.1:$MARIADB_PORT/$TEST_DB ($(maria_tcp -N -B -e 'SELECT VERSION()'))"
}

# ------------------------------------------------------------------- nats --

# A NATS server answers `PING` with `PONG` after its INFO line.
nats_ping() {
    exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT" || return 1
    printf 'CONNECT {"verbose":false}\r\nPING\r\n' >&3
    local ok=1 line
    while IFS= read -r -t 2 line <&3; do
        if [[ $line == PONG* ]]; then ok=0; break; fi
    done
    exec 3>&-
    return $ok
}

ensure_nats() {
    command -v nats-server >/dev/null || install_pkgs nats-server

    local dir="$SERVICES_DIR/nats" state=reused
    if ! nats_ping 2>/dev/null; then
        state=started
        mkdir -p "$dir/jetstream"
        # max_payload: the pub/sub suite sends 1 MiB bodies plus headers,
        # just over the 1 MB default.
        cat >"$dir/nats.conf" <<CONF
listen: 127.0.0.1:$NATS_PORT
max_payload: 8MB
jetstream {
  store_dir: "$dir/jetstream"
}
CONF
        setsid nats-server -c "$dir/nats.conf" -P "$dir/nats.pid" -l "$dir/nats.log" \
            </dev/null >/dev/null 2>&1 &
        disown
        wait_for NATS "$dir/nats.log" nats_ping
    fi
    summary nats "$state" "nats://127.0.0.1:$NATS_PORT ($(nats-server --version 2>/dev/null))"
}

# --------------------------------------------------------------- rabbitmq --

# An AMQP 0-9-1 server answers the protocol header with a Connection.Start
# method frame (frame type 1).
rabbit_ping() {
    timeout 3 bash -c 'exec 4<>"/dev/tcp/127.0.0.1/$1" &&
        printf "AMQP\x00\x00\x09\x01" >&4 && head -c 1 <&4 | od -An -tx1' _ "$RABBITMQ_PORT" |
        grep -q 01
}

ensure_rabbitmq() {
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || install_pkgs rabbitmq-server

    local dir="$SERVICES_DIR/rabbitmq" state=reused
    if ! rabbit_ping 2>/dev/null; then
        state=started
        local user
        user=$(id -un)
        [[ $EUID -ne 0 ]] || user=rabbitmq
        own_dir "$user" "$dir"
        echo '[].' >"$dir/enabled_plugins" # no management plugin (port 15672)
        [[ $EUID -ne 0 ]] || chown "$user:" "$dir/enabled_plugins"
        # Everything on loopback: AMQP, epmd (ERL_EPMD_ADDRESS) and Erlang
        # distribution (inet_dist_use_interface); a node name of our own so a
        # distro RabbitMQ can run next to it.
        as_user "$user" env \
            RABBITMQ_NODENAME=dapr-rs-test@localhost \
            RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RABBITMQ_PORT" \
            RABBITMQ_DIST_PORT=$((RABBITMQ_PORT + 20000)) \
            ERL_EPMD_ADDRESS=127.0.0.1 \
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
            RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
            RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
            RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
            RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
            setsid /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >>"$dir/rabbitmq.out" 2>&1 &
        disown
        wait_for RabbitMQ "$dir/rabbitmq.out" rabbit_ping
    fi
    summary rabbitmq "$state" "amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT"
}

# -------------------------------------------------------------- mosquitto --

# An MQTT broker answers CONNECT (MQTT 3.1.1, clean session, client id
# "probe") with CONNACK: first byte 0x20.
mosquitto_ping() {
    timeout 3 bash -c 'exec 5<>"/dev/tcp/127.0.0.1/$1" &&
        printf "\x10\x11\x00\x04MQTT\x04\x02\x00\x0a\x00\x05probe" >&5 &&
        head -c 1 <&5 | od -An -tx1' _ "$MOSQUITTO_PORT" | grep -q 20
}

ensure_mosquitto() {
    [[ -x /usr/sbin/mosquitto ]] || install_pkgs mosquitto

    local dir="$SERVICES_DIR/mosquitto" state=reused
    if ! mosquitto_ping 2>/dev/null; then
        state=started
        local user
        user=$(id -un)
        [[ $EUID -ne 0 ]] || user=mosquitto
        own_dir "$user" "$dir"
        # Loopback only; anonymous clients; no persistence (throwaway test
        # data); messages up to 8 MiB (the suite sends 1 MiB bodies).
        cat >"$dir/mosquitto.conf" <<CONF
listener $MOSQUITTO_PORT 127.0.0.1
allow_anonymous true
persistence false
message_size_limit 8388608
max_queued_messages 10000
log_dest file $dir/mosquitto.log
pid_file $dir/mosquitto.pid
user $user
CONF
        setsid /usr/sbin/mosquitto -c "$dir/mosquitto.conf" </dev/null >>"$dir/mosquitto.out" 2>&1 &
        disown
        wait_for Mosquitto "$dir/mosquitto.out" mosquitto_ping
    fi
    summary mosquitto "$state" "mqtt://127.0.0.1:$MOSQUITTO_PORT"
}

# ---------------------------------------------------------------- promtool --

# Not a server: `promtool check metrics` validates the /metrics pages in
# runtime/tests/observability.rs. Debian ships it in `prometheus` (whose
# daemon is not started here).
ensure_promtool() {
    command -v promtool >/dev/null || install_pkgs prometheus
    summary promtool ok "$(promtool --version 2>&1 | head -1)"
}

# ------------------------------------------------------------------ python --

ensure_python() {
    command -v python3 >/dev/null || die "python3 not found"
    # dapr.ext.fastapi + uvicorn host the Python actor app (e2e/python/actor_app.py).
    if ! python3 -c 'import dapr.clients, dapr.ext.fastapi, fastapi, uvicorn, pytest, cryptography' >/dev/null 2>&1; then
        # dapr >= 1.19 ships dapr.ext.grpc itself (the "grpc" extra); the old
        # separate dapr-ext-grpc distribution overwrites those files and makes
        # every `import dapr` warn, so use the extra instead.
        # cryptography: e2e/python/test_crypto.py's independent envelope decoder.
        log "pip install dapr[grpc,fastapi] uvicorn pytest cryptography"
        python3 -m pip install -q --disable-pip-version-check 'dapr[grpc,fastapi]' uvicorn pytest cryptography ||
            die "pip install failed"
    fi
    summary python ok "$(python3 -W ignore -c 'import importlib.metadata as m; print("dapr", m.version("dapr"), "pytest", m.version("pytest"))')"
}

main() {
    mkdir -p "$SERVICES_DIR"
    SERVICES_DIR=$(cd "$SERVICES_DIR" && pwd) # absolute: daemons do not share our cwd
    ensure_redis
    ensure_postgres
    ensure_mariadb
    ensure_nats
    ensure_rabbitmq
    ensure_mosquitto
    ensure_promtool
    ensure_python
}

main "$@"
