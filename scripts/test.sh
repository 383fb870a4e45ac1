#!/usr/bin/env bash
# `make test` after setup: the whole suite on both cores, then the static checks.
# The model-based tests (tests/test_model.py, CPU-bound) run in one pytest process while the
# real-server tests (mostly waiting on named, Knot, PowerDNS, Pebble and TTLs) run in another;
# the model's output is printed after the other's. Exit non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# The Debian root tests/test_systemd_boot.py boots (systemd-nspawn): built from Debian's archive once, about
# 35 s, then cached under /var/cache/certbot-dane-tests keyed by its package list (sandbox/nspawn.py).
if [ "$(id -u)" -eq 0 ] && command -v mmdebstrap >/dev/null; then
    "$PY" -m sandbox.nspawn || echo "test: could not build the systemd-nspawn root (tests/test_systemd_boot.py fails)" >&2
fi
model_log=$(mktemp)
trap 'rm -f "$model_log"' EXIT
"$PY" -m pytest -q tests/test_model.py >"$model_log" 2>&1 &
model=$!
"$PY" -m pytest -q --ignore=tests/test_model.py
rest=$?
wait "$model"
model_status=$?
echo "----- tests/test_model.py (ran alongside) -----"
cat "$model_log"
if [ "$rest" -ne 0 ] || [ "$model_status" -ne 0 ]; then
    echo "test: FAILED (real-server and other tests: exit $rest; model: exit $model_status)" >&2
    exit 1
fi
"$PY" -m mypy && "$PY" -m ruff check certbot_dane tests sandbox bench && .venv/bin/lint-imports
