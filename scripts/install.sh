#!/usr/bin/env bash
# Installs the City Edge Gateway as a systemd service on Raspberry Pi OS
# (Bookworm or Trixie, arm64 or armhf). Safe to run again; --uninstall undoes it.
#
#   sudo scripts/install.sh                 install (or update) and enable
#   sudo scripts/install.sh --uninstall     remove the service, venv and user; keep config and buffer
#   sudo scripts/install.sh --uninstall --purge   also remove config, secrets and the buffer
#
# Options:
#   --root DIR        install into DIR instead of / (an image, or a test). With a root
#                     other than /, nothing touches the running system: no apt, no
#                     useradd/chown, no systemctl start; the user and group entries
#                     are written to DIR/etc/{passwd,group} and the unit is enabled
#                     with `systemctl --root` (or the same symlink made by hand).
#   --source DIR      the gateway source to install (default: this checkout)
#   --wheels DIR      install offline from wheels in DIR (pip --no-index --find-links)
#   --pip-option OPT  passed to pip (repeatable)
#
# Layout: /opt/city-edge-gateway/venv -> venvs/installed (the code; `gateway update` adds
# venvs beside it and switches the link), /etc/city-edge-gateway (config,
# credentials/ for secrets), /var/lib/city-edge-gateway (the buffer). A config on
# the SD card's boot partition, /boot/firmware/gateway.yaml, is imported at boot.
set -euo pipefail

NAME=city-edge-gateway
GROUPS_WANTED=(gpio i2c dialout bluetooth)
ROOT=/
SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
ACTION=install
PURGE=0
PIP_OPTS=()

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        --source) SOURCE="$2"; shift 2 ;;
        --wheels) PIP_OPTS+=(--no-index --find-links "$2"); shift 2 ;;
        --pip-option) PIP_OPTS+=("$2"); shift 2 ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$ROOT" && pwd)"
R="${ROOT%/}"            # prefix for paths: "" for the real system
LIVE=0; [ "$ROOT" = / ] && LIVE=1
OPT="$R/opt/$NAME"
ETC="$R/etc/$NAME"
STATE="$R/var/lib/$NAME"
UNITS="$R/etc/systemd/system"

say() { echo "install: $*" >&2; }

check_platform() {
    local id version arch
    id="$(. "$R/etc/os-release" 2>/dev/null && echo "${ID:-?}")" || id="?"
    version="$(. "$R/etc/os-release" 2>/dev/null && echo "${VERSION_CODENAME:-?}")" || version="?"
    arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
    case "$version" in bookworm|trixie) ;; *) say "note: tested on Raspberry Pi OS bookworm/trixie, this is $id $version" ;; esac
    case "$arch" in arm64|armhf|aarch64|armv7l) ;; *) say "note: built for arm64/armhf, this machine is $arch" ;; esac
}

# --- the system user ---------------------------------------------------------------------------

add_user() {
    if [ "$LIVE" = 1 ]; then
        getent group "$NAME" >/dev/null || groupadd --system "$NAME"
        getent passwd "$NAME" >/dev/null || useradd --system --gid "$NAME" --home-dir "/var/lib/$NAME" \
            --no-create-home --shell /usr/sbin/nologin --comment "City Edge Gateway" "$NAME"
        for g in "${GROUPS_WANTED[@]}"; do
            if getent group "$g" >/dev/null; then usermod -aG "$g" "$NAME"; else say "no group $g here; skipped"; fi
        done
        return
    fi
    # Simulated for a root directory: the same entries useradd would write.
    mkdir -p "$R/etc"; touch "$R/etc/passwd" "$R/etc/group"
    if ! grep -q "^$NAME:" "$R/etc/group"; then
        echo "$NAME:x:$(free_id "$R/etc/group" 3):" >> "$R/etc/group"
    fi
    local gid; gid="$(awk -F: -v n="$NAME" '$1==n {print $3}' "$R/etc/group")"
    if ! grep -q "^$NAME:" "$R/etc/passwd"; then
        echo "$NAME:x:$(free_id "$R/etc/passwd" 3):$gid:City Edge Gateway:/var/lib/$NAME:/usr/sbin/nologin" >> "$R/etc/passwd"
    fi
    for g in "${GROUPS_WANTED[@]}"; do
        awk -F: -v OFS=: -v g="$g" -v u="$NAME" '
            $1==g { n=split($4, m, ","); has=0; for (i=1;i<=n;i++) if (m[i]==u) has=1
                    if (!has) $4 = ($4=="" ? u : $4 "," u) } { print }' "$R/etc/group" > "$R/etc/group.new"
        mv "$R/etc/group.new" "$R/etc/group"
    done
}

free_id() {  # the lowest system id (100-999) not used in file $1, column $2
    awk -F: -v c="$2" '{used[$c]=1} END {for (i=999; i>=100; i--) if (!(i in used)) {print i; exit}}' "$1"
}

remove_user() {
    if [ "$LIVE" = 1 ]; then
        getent passwd "$NAME" >/dev/null && userdel "$NAME"
        getent group "$NAME" >/dev/null && groupdel "$NAME"
        return 0
    fi
    [ -f "$R/etc/passwd" ] && { grep -v "^$NAME:" "$R/etc/passwd" > "$R/etc/passwd.new" || true; mv "$R/etc/passwd.new" "$R/etc/passwd"; }
    if [ -f "$R/etc/group" ]; then
        awk -F: -v OFS=: -v u="$NAME" '$1==u {next}
            { n=split($4, m, ","); out=""; for (i=1;i<=n;i++) if (m[i]!=u) out = (out=="" ? m[i] : out "," m[i]); $4=out; print }' \
            "$R/etc/group" > "$R/etc/group.new"
        mv "$R/etc/group.new" "$R/etc/group"
    fi
}

owned() {  # chown to root:gateway on the live system only (a root dir has no such group on this host)
    if [ "$LIVE" = 1 ]; then chown "$@"; fi
}

# --- install / uninstall -----------------------------------------------------------------------

install_venv() {
    local version stamp
    # The commit plus any uncommitted change: the same source is not installed twice.
    version="$(cd "$SOURCE" && { git rev-parse HEAD && git diff HEAD | sha256sum; } 2>/dev/null | tr -s ' \n-' ' ')" \
        || version="$(cat "$SOURCE/pyproject.toml" | sha256sum)"
    stamp="$OPT/installed-from"
    if [ -x "$OPT/venv/bin/gateway" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
        say "venv is up to date ($version)"
        return
    fi
    if [ "$LIVE" = 1 ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt-get update && apt-get install -y python3-venv
    fi
    # venv is a link to venvs/<name>, so `gateway update` can switch versions in one rename;
    # a venv from before that layout is replaced.
    mkdir -p "$OPT/venvs"
    if [ -d "$OPT/venv" ] && [ ! -L "$OPT/venv" ]; then rm -rf "$OPT/venv"; fi
    [ -x "$OPT/venvs/installed/bin/python" ] || python3 -m venv "$OPT/venvs/installed"
    "$OPT/venvs/installed/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_OPTS[@]}" "$SOURCE"
    ln -sfn venvs/installed "$OPT/venv.switching" && mv -Tf "$OPT/venv.switching" "$OPT/venv"
    echo "$version" > "$stamp"
}

enable_units() {
    if [ "$LIVE" = 1 ]; then
        systemctl daemon-reload
        systemctl enable "$NAME.service" "$NAME-boot-config.service" "$NAME-update.path"
    elif command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" --quiet enable "$NAME.service" "$NAME-boot-config.service" "$NAME-update.path"
    else  # what `systemctl enable` does for WantedBy=multi-user.target and paths.target
        mkdir -p "$UNITS/multi-user.target.wants" "$UNITS/paths.target.wants"
        ln -sfn "/etc/systemd/system/$NAME.service" "$UNITS/multi-user.target.wants/$NAME.service"
        ln -sfn "/etc/systemd/system/$NAME-boot-config.service" "$UNITS/multi-user.target.wants/$NAME-boot-config.service"
        ln -sfn "/etc/systemd/system/$NAME-update.path" "$UNITS/paths.target.wants/$NAME-update.path"
    fi
}

do_install() {
    check_platform
    add_user
    install_venv
    install -d -m 0755 "$UNITS" "$OPT"
    install -m 0644 "$SOURCE/systemd/$NAME.service" "$SOURCE/systemd/$NAME-boot-config.service" \
        "$SOURCE/systemd/$NAME-update.service" "$SOURCE/systemd/$NAME-update.path" "$UNITS/"
    install -m 0755 "$SOURCE/systemd/import-boot-config" "$OPT/import-boot-config"
    # `gateway` on PATH for the technician (sudo gateway status, gateway check ...).
    install -d -m 0755 "$R/usr/local/bin"
    ln -sfn "/opt/$NAME/venv/bin/gateway" "$R/usr/local/bin/gateway"
    # The config directory is the gateway's to write (a signed config from the city replaces gateway.yaml);
    # secrets stay in credentials/, root's alone.
    install -d -m 0770 "$ETC"; install -d -m 0750 "$STATE"; owned "root:$NAME" "$ETC"; owned "$NAME:$NAME" "$STATE"
    install -d -m 0700 "$ETC/credentials"
    # The BLE pseudonyms' key, made once, readable by root alone: systemd's LoadCredential= hands it to the
    # service as /run/credentials/city-edge-gateway.service/secret_beacon.salt (the path the sample names).
    if [ ! -e "$ETC/credentials/beacon.salt" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 > "$ETC/credentials/beacon.salt")
    fi
    if [ ! -e "$ETC/gateway.yaml" ]; then   # never overwrite a technician's config
        install -m 0640 "$SOURCE/config/pi-example.yaml" "$ETC/gateway.yaml"; owned "root:$NAME" "$ETC/gateway.yaml"
    fi
    enable_units
    if [ "$LIVE" = 1 ]; then
        /opt/$NAME/import-boot-config || true
        if "$OPT/venv/bin/gateway" check -c "$ETC/gateway.yaml"; then
            systemctl restart "$NAME.service"
            say "running; \`gateway status\` (as root) shows what it does"
        else
            say "edit $ETC/gateway.yaml (or put gateway.yaml on the boot partition), then: systemctl restart $NAME"
        fi
    fi
    say "installed into $ROOT"
}

do_uninstall() {
    if [ "$LIVE" = 1 ]; then
        systemctl disable --now "$NAME.service" "$NAME-boot-config.service" "$NAME-update.path" 2>/dev/null || true
    elif command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" --quiet disable "$NAME.service" "$NAME-boot-config.service" "$NAME-update.path" \
            2>/dev/null || true
    fi
    rm -f "$UNITS/multi-user.target.wants/$NAME.service" "$UNITS/multi-user.target.wants/$NAME-boot-config.service" \
        "$UNITS/paths.target.wants/$NAME-update.path"
    rmdir "$UNITS/multi-user.target.wants" "$UNITS/paths.target.wants" 2>/dev/null || true
    rm -f "$UNITS/$NAME.service" "$UNITS/$NAME-boot-config.service" "$UNITS/$NAME-update.service" "$UNITS/$NAME-update.path"
    rm -rf "$OPT"
    if [ "$(readlink "$R/usr/local/bin/gateway" 2>/dev/null)" = "/opt/$NAME/venv/bin/gateway" ]; then
        rm -f "$R/usr/local/bin/gateway"
    fi
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE"
    else
        say "kept $ETC and $STATE (config and undelivered readings); --purge removes them"
    fi
    remove_user
    if [ "$LIVE" = 1 ]; then
        systemctl daemon-reload
    else  # directories this script created in an empty root
        for d in "$UNITS" "$R/etc/systemd" "$R/var/lib" "$R/var" "$R/opt" "$R/usr/local/bin" "$R/usr/local" "$R/usr"; do
            rmdir "$d" 2>/dev/null || true
        done
    fi
    say "uninstalled from $ROOT"
}

if [ "$LIVE" = 1 ] && [ "$(id -u)" -ne 0 ]; then echo "run as root (sudo $0 $*)" >&2; exit 1; fi
"do_$ACTION"
