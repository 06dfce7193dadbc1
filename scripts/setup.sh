#!/usr/bin/env bash
# Creates .venv with lineguard and its test, export and deployment-check extras, and
# .venv-tools with the tools that need their own environment (checkov), and the Strimzi schema
# check's npm package; skips the work when none of their lists changed since the last set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "lineguard needs Python 3.11 or newer (found: $("$python" --version 2>&1))" >&2
    exit 1
fi

stamp=.venv/.lineguard-setup
want=$(cat pyproject.toml scripts/tools-requirements.txt deploy/checks/package-lock.json | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

echo "setting up .venv (first run installs torch, a few minutes)..." >&2
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
[ -x .venv-tools/bin/python ] || "$python" -m venv .venv-tools
.venv-tools/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/tools-requirements.txt
if ! command -v npm >/dev/null; then
    echo "the deployment checks need Node.js and npm (Debian/Ubuntu: apt install nodejs npm)" >&2
    exit 1
fi
npm ci --silent --no-audit --no-fund --prefix deploy/checks
echo "$want" > "$stamp"
