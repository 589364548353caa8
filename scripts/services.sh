#!/usr/bin/env bash
# Make sure the services the integration tests talk to are up: Redis on 6379 and
# PostgreSQL on 5432 (trust auth for user postgres). Starts an installed one that is
# down; installs a missing one with apt-get when running as root.
set -euo pipefail

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "services: $1 is missing and installing it needs root (apt-get install $*)" >&2; return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
wait_for() { for _ in $(seq 1 30); do "$1" && return 0; sleep 1; done; echo "services: $2 did not come up" >&2; return 1; }

if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/modelyard-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/modelyard-redis --logfile /tmp/modelyard-redis/redis.log
  wait_for redis_up Redis
fi
echo "services: Redis up on 127.0.0.1:6379"

if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  version=$(ls /etc/postgresql | sort -n | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for pg_up PostgreSQL
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  # A fresh Debian cluster trusts only the local socket user: allow the tests' TCP logins.
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | tail -n 1)
  if [ -n "$hba" ] && [ "$(id -u)" = 0 ]; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    su postgres -c "psql -Atc 'select pg_reload_conf()'" >/dev/null
  fi
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null
echo "services: PostgreSQL up on 127.0.0.1:5432"
