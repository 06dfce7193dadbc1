#!/usr/bin/env bash
# The two entry points of the README: `./run.sh demo` (the main job) and `./run.sh test`.
# Anything else is passed to the `lineguard` command inside the project's virtualenv.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh

case "${1:-}" in
    test)
        shift
        .venv/bin/ruff check .
        exec .venv/bin/python -m pytest -q "$@"
        ;;
    "")
        exec .venv/bin/lineguard --help
        ;;
    *)
        exec .venv/bin/lineguard "$@"
        ;;
esac
