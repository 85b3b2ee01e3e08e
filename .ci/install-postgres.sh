#!/usr/bin/env bash
# Installs a PostgreSQL server from Debian packages for the distributed-sweep test
# (tests/test_sweep.py starts its own throw-away server with initdb + pg_ctl).
# Idempotent and non-interactive; never fails the CI run: without apt-get or root it says why
# and exits 0, and the test then skips with its reason.
set -u

found_server() {
    command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if found_server; then
    echo "install-postgres: a PostgreSQL server is already installed; nothing to do"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres: apt-get not found (not Debian/Ubuntu); the PostgreSQL sweep test will skip"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-postgres: not root and no password-less sudo; the PostgreSQL sweep test will skip"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# the package's post-install starts a cluster through invoke-rc.d; in containers without an init
# system that is refused (exit 101), which is fine: the test starts its own server
if ! $SUDO apt-get update -qq; then
    echo "install-postgres: apt-get update failed (no network?); the PostgreSQL sweep test will skip"
    exit 0
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
    echo "install-postgres: apt-get install postgresql failed; the PostgreSQL sweep test will skip"
    exit 0
fi
if found_server; then
    echo "install-postgres: installed $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)"
else
    echo "install-postgres: postgresql installed but no initdb found; the PostgreSQL sweep test will skip"
fi
exit 0
