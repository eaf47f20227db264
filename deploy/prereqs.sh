#!/usr/bin/env bash
# Checks what the local stack and the test suite need from the machine, says
# exactly what is missing and the one command that installs it. As root on
# Debian/Ubuntu it installs the missing packages itself, unless
# BLUEGREEN_NO_INSTALL=1 is set.
set -euo pipefail

PG_BIN="${BLUEGREEN_STACK__PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
missing=()     # Debian package names
why=()

need() {  # need <present?> <package> <reason>
  if ! eval "$1" >/dev/null 2>&1; then
    missing+=("$2"); why+=("$3")
  fi
}

need 'python3 -c "import sys, venv; assert sys.version_info >= (3, 11)"' python3-venv \
  "Python 3.11+ with the venv module (the virtual environment in .venv)"
need 'java -version' openjdk-17-jre-headless "Java 17+ (runs the Apache Kafka broker)"
need 'mvn -v' maven "Maven (resolves Apache Kafka's jars from Maven Central)"
need "test -x '$PG_BIN/initdb' && test -x '$PG_BIN/pg_ctl'" postgresql-15 \
  "PostgreSQL 15 server binaries in $PG_BIN (blue, green and control clusters)"
if [ "${1:-}" = "--with-test-tools" ]; then
  need 'promtool --version' prometheus "promtool (checks and tests the alert rules)"
fi
if [ "$(id -u)" = 0 ]; then
  need 'command -v runuser' util-linux "runuser (PostgreSQL refuses to run as root)"
  need 'id postgres' postgresql-15 "the postgres system user"
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "bluegreen needs, and this machine lacks:" >&2
for i in "${!missing[@]}"; do echo "  - ${why[$i]}  [package ${missing[$i]}]" >&2; done
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
cmd="apt-get install -y --no-install-recommends ${packages[*]}"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "${BLUEGREEN_NO_INSTALL:-0}" != 1 ]; then
  echo "installing: $cmd" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # postgresql-common would create and start a system cluster on 5432; the
  # bluegreen stack runs its own clusters, so skip that.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/bluegreen.conf
  $cmd -qq >/dev/null
  exit 0
fi
echo "install them with:  sudo $cmd" >&2
exit 1
