#!/usr/bin/env bash
# Installs Debian's nginx for tests/deploy (the load-balancer tests) when it is missing.
# Idempotent; as root it installs or fails, as anyone else it only warns (the tests
# then skip with the reason). The package's own service is never started.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: nginx is missing and cannot be installed here (needs root and apt-get);" \
        "tests/deploy's load-balancer tests will be skipped" >&2
    exit 0
fi

# Debian starts a freshly installed service unless policy-rc.d says no.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# nginx-light (Debian 12) carries the grpc and upstream modules; later releases
# ship them in plain nginx.
if ! apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; then
    apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
