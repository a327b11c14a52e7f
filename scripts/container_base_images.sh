#!/usr/bin/env bash
# Makes the base images that docker/Dockerfile and docker-compose.yml name, locally,
# when no registry answers (make test-containers). Each is skipped when its tag
# already exists, so a pulled official image is always preferred and the stand-in is
# made once per engine.
#
#   python:3.11-slim-bookworm   STAND-IN: Debian 12 (debootstrap --variant=minbase)
#                               with Debian's python3 3.11 and pip; not the official
#                               image (its Python is /usr/bin, not /usr/local, and it is
#                               larger). The Dockerfile builds on it unchanged.
#   nginxinc/nginx-unprivileged:1.28-alpine
#                               STAND-IN: the same Debian root with Debian's nginx
#                               1.22 run as uid 101 on 8080 with the official image's
#                               envsubst template step; 1.22 lacks the `resolve`
#                               upstream parameter (1.27.3+), which the compose test
#                               overrides (tests/containers/compose.override.yml).
#
# DOCKER (default: docker) is the engine's command line; MIRROR the Debian mirror.
set -euo pipefail

DOCKER=${DOCKER:-docker}
PYTHON_IMAGE=python:3.11-slim-bookworm
NGINX_IMAGE=nginxinc/nginx-unprivileged:1.28-alpine

has_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

mirror() {
    if [ -n "${MIRROR:-}" ]; then
        echo "$MIRROR"
        return
    fi
    # The first Debian mirror apt uses here (deb822 .sources or sources.list).
    local found
    found=$(sed -n 's/^URIs: *\([^ ]*\/debian\)\/\{0,1\}$/\1/p' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    if [ -z "$found" ]; then
        found=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\)\/\{0,1\} .*/\2/p' \
            /etc/apt/sources.list 2>/dev/null | head -n 1)
    fi
    echo "${found:-http://deb.debian.org/debian}"
}

bootstrap() { # ROOTFS PACKAGES
    command -v debootstrap >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    debootstrap --variant=minbase --include="$2" bookworm "$1" "$(mirror)" >"$1.log" 2>&1 || {
        tail -n 20 "$1.log" >&2
        return 1
    }
    rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb
}

work=$(mktemp -d /var/tmp/actgrad-base.XXXXXX)
trap 'rm -rf "$work"' EXIT

if has_image "$PYTHON_IMAGE"; then
    echo "base image $PYTHON_IMAGE: present"
else
    echo "base image $PYTHON_IMAGE: making a stand-in with debootstrap (1-2 minutes)"
    bootstrap "$work/python" python3,python3-venv,python3-pip,python-is-python3,ca-certificates
    # The official image's pip installs anywhere; Debian's refuses outside a venv.
    rm -f "$work"/python/usr/lib/python3*/EXTERNALLY-MANAGED
    tar -C "$work/python" -c . | "$DOCKER" import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
fi

if has_image "$NGINX_IMAGE"; then
    echo "base image $NGINX_IMAGE: present"
else
    echo "base image $NGINX_IMAGE: making a stand-in with debootstrap (1-2 minutes)"
    bootstrap "$work/nginx" nginx-light,gettext-base
    root="$work/nginx"
    # What the official unprivileged image does: uid 101, /tmp for pid and temp files,
    # and /docker-entrypoint.d/20-envsubst-on-templates.sh (templates/*.template ->
    # conf.d, only the variables matching NGINX_ENVSUBST_FILTER).
    groupadd --root "$root" --system --gid 101 nginx-lb
    useradd --root "$root" --system --uid 101 --gid 101 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin nginx-lb
    mkdir -p "$root/etc/nginx/templates" "$root/etc/nginx/conf.d"
    rm -f "$root"/etc/nginx/sites-enabled/* "$root"/etc/nginx/conf.d/*
    cat >"$root/etc/nginx/nginx.conf" <<'EOF'
worker_processes auto;
pid /tmp/nginx.pid;
error_log /dev/stderr notice;
events { worker_connections 1024; }
http {
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path /tmp/proxy_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;
    include /etc/nginx/conf.d/*.conf;
}
EOF
    cat >"$root/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -eu
filter=${NGINX_ENVSUBST_FILTER:-}
defined=$(env | cut -d= -f1 | grep -E "${filter:-.}" | sed 's/^/$/' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
    [ -e "$template" ] || continue
    name=$(basename "$template" .template)
    envsubst "$defined" <"$template" >"/etc/nginx/conf.d/$name"
done
exec "$@"
EOF
    chmod 755 "$root/docker-entrypoint.sh"
    # As the official image: nginx's configuration belongs to its user (a tmpfs over
    # conf.d keeps the directory's owner and mode).
    chown -R 101:0 "$root/etc/nginx"
    chmod -R g+w "$root/etc/nginx"
    # (docker import takes no STOPSIGNAL: compose sets SIGQUIT.)
    tar -C "$root" -c . | "$DOCKER" import \
        --change 'USER 101' --change 'EXPOSE 8080' \
        --change 'ENTRYPOINT ["/docker-entrypoint.sh"]' \
        --change 'CMD ["nginx", "-g", "daemon off;"]' - "$NGINX_IMAGE" >/dev/null
fi
