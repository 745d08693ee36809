#!/usr/bin/env bash
# Elasticsearch 8 API emulator (noida-db from PyPI) for testing the official
# `elasticsearch` client path: headers, product check, bulk, templates.
# Engine *behaviour* is tested on the genuine OpenSearch (deploy/opensearch.sh).
#   deploy/es-emulator.sh up|down|status
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/deploy/.work/es-emulator"
PORT="${ES_EMULATOR_PORT:-9201}"
NOIDA="${NOIDA_DB:-$ROOT/.venv/bin/noida-db}"
mkdir -p "$WORK"
# noida-db's binary prints a harmless glibc symbol-version warning on Debian 12.
quiet() { "$@" 2> >(grep -v 'GLIBC_' >&2); }

answering() { curl -fsS -m 2 "http://127.0.0.1:$PORT/" >/dev/null 2>&1; }

case "${1:-}" in
  up)
    if answering; then echo "es-emulator already up on http://127.0.0.1:$PORT"; exit 0; fi
    [ -x "$NOIDA" ] || { echo "noida-db not found at $NOIDA (pip install -e '.[dev]')" >&2; exit 1; }
    quiet "$NOIDA" up --only elasticsearch --data-dir "$WORK" --elasticsearch-port "$PORT" >"$WORK/up.log"
    for _ in $(seq 1 50); do answering && break; sleep 0.2; done
    answering || { cat "$WORK/up.log" >&2; echo "es-emulator did not answer on port $PORT" >&2; exit 1; }
    v=$(curl -fsS "http://127.0.0.1:$PORT/" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["version"]["number"])')
    echo "es-emulator (noida-db, Elasticsearch API $v) up on http://127.0.0.1:$PORT"
    ;;
  down)
    quiet "$NOIDA" down --data-dir "$WORK" >/dev/null 2>&1 || true
    echo "es-emulator down"
    ;;
  status)
    if answering; then echo "es-emulator running on http://127.0.0.1:$PORT"; else echo "es-emulator stopped"; exit 1; fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
