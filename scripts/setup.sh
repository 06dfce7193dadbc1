#!/usr/bin/env bash
# Creates .venv with lineguard and its test, export and deployment-check extras, and
# .venv-tools with the tools that need their own environment (checkov); skips the work when
# pyproject.toml and scripts/tools-requirements.txt have not changed since the last set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "lineguard needs Python 3.11 or newer (found: $("$python" --version 2>&1))" >&2
    exit 1
fi

stamp=.venv/.lineguard-setup
want=$(cat pyproject.toml scripts/tools-requirements.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

echo "setting up .venv (first run installs torch, a few minutes)..." >&2
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
[ -x .venv-tools/bin/python ] || "$python" -m venv .venv-tools
.venv-tools/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/tools-requirements.txt
echo "$want" > "$stamp"
