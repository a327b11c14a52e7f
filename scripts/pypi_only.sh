#!/usr/bin/env bash
# Runs a command with pip configured for PyPI alone, as on a user's laptop: no pip
# configuration file (PIP_CONFIG_FILE=/dev/null skips every one) and no PIP_*
# setting from the environment (find-links, extra index URLs, constraints).
#   scripts/pypi_only.sh make install
set -euo pipefail
for name in $(compgen -e); do
    case "$name" in PIP_*) unset "$name" ;; esac
done
export PIP_CONFIG_FILE=/dev/null
exec "$@"
