#!/usr/bin/env bash
# Install the CodeTether agent worker on a plain Linux machine, run by systemd.
#
#   sudo ./deploy/systemd/install.sh            # from a checkout of this repository
#
# Creates the a2a-worker system user, a virtual environment in /opt/a2a-worker/venv with the worker
# and the example agent, /etc/a2a-worker/config.json (kept when it exists), /etc/a2a-worker/env for
# the bearer token, and the a2a-agent-worker systemd unit (enabled, not started: edit the config first).
#
# Overridable for packaging and tests: A2A_PREFIX, A2A_CONFIG_DIR, A2A_SYSTEMD_DIR, A2A_USER, PYTHON,
# A2A_SKIP_USER=1 (use an existing user), A2A_SKIP_SYSTEMCTL=1 (do not call systemctl).
set -euo pipefail

PREFIX="${A2A_PREFIX:-/opt/a2a-worker}"
CONFIG_DIR="${A2A_CONFIG_DIR:-/etc/a2a-worker}"
SYSTEMD_DIR="${A2A_SYSTEMD_DIR:-/etc/systemd/system}"
SERVICE_USER="${A2A_USER:-a2a-worker}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
UNIT=a2a-agent-worker.service

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[ "${A2A_SKIP_USER:-0}" = 1 ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
[ -f "$REPO/pyproject.toml" ] || die "run from a checkout of the repository ($REPO has no pyproject.toml)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON lacks venv/ensurepip (apt-get install python3-venv)"
command -v git >/dev/null || say "git is not installed: codebases with a git source cannot be cloned"

if [ "${A2A_SKIP_USER:-0}" != 1 ] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  say "creating system user $SERVICE_USER"
  useradd --system --home-dir /var/lib/a2a-worker --create-home --shell /usr/sbin/nologin \
    --comment "CodeTether agent worker" "$SERVICE_USER"
fi

say "installing the worker into $PREFIX/venv"
mkdir -p "$PREFIX"
"$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet "$REPO"
"$PREFIX/venv/bin/codetether-worker" --version

mkdir -p "$CONFIG_DIR"
if [ -e "$CONFIG_DIR/config.json" ]; then
  say "keeping the existing $CONFIG_DIR/config.json"
else
  say "writing $CONFIG_DIR/config.json"
  sed "s/@HOSTNAME@/$(hostname -s)/" "$HERE/config.example.json" > "$CONFIG_DIR/config.json"
fi
if [ ! -e "$CONFIG_DIR/env" ]; then
  printf '# A2A_AUTH_TOKEN=...\n' > "$CONFIG_DIR/env"
fi
chmod 0640 "$CONFIG_DIR/config.json"
chmod 0600 "$CONFIG_DIR/env"
if [ "${A2A_SKIP_USER:-0}" != 1 ]; then
  chown "root:$SERVICE_USER" "$CONFIG_DIR/config.json"
  chown -R "$SERVICE_USER:$SERVICE_USER" "$PREFIX"
fi

agent=""
for candidate in codetether opencode; do
  agent="$(command -v "$candidate" || true)"
  [ -n "$agent" ] && break
done
if [ -z "$agent" ]; then
  say "no agent (codetether, opencode) on PATH: set \"agent_bin\" in $CONFIG_DIR/config.json"
  say "  (the bundled example agent is $PREFIX/venv/bin/codetether-example-agent)"
fi

say "installing $SYSTEMD_DIR/$UNIT"
mkdir -p "$SYSTEMD_DIR"
sed -e "s#/opt/a2a-worker#$PREFIX#g" -e "s#/etc/a2a-worker#$CONFIG_DIR#g" \
  -e "s#^User=a2a-worker#User=$SERVICE_USER#" -e "s#^Group=a2a-worker#Group=$SERVICE_USER#" \
  "$HERE/$UNIT" > "$SYSTEMD_DIR/$UNIT"
if [ "${A2A_SKIP_SYSTEMCTL:-0}" != 1 ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
  systemctl enable "$UNIT"
fi

cat <<NEXT

Installed. Next:
  1. edit $CONFIG_DIR/config.json (server_url, codebases, agent_bin); the token goes in $CONFIG_DIR/env
  2. sudo systemctl start a2a-agent-worker
  3. sudo journalctl -u a2a-agent-worker -f      (curl localhost:8081/readyz once it runs)
NEXT
