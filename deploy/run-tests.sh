#!/usr/bin/env bash
# `make test`: fetch and start genuine Kafka + OpenSearch (+ the Elasticsearch API
# emulator), run unit then integration tests against them, and always stop the
# services again, even when tests fail. Exit status: pytest's, except that a
# part with no tests (pytest exit 5) does not fail the run on its own.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTEST="$ROOT/.venv/bin/pytest"
export WITH_ES_EMULATOR=1

cleanup() { bash deploy/local.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

ran=0
run_part() {
  local name="$1"; shift
  echo "== $name"
  "$PYTEST" "$@"
  local rc=$?
  if [ $rc -eq 5 ]; then echo "== $name: no tests collected"; return 0; fi
  [ $rc -eq 0 ] && ran=1
  return $rc
}

rc=0
build="$("$ROOT/.venv/bin/python" -c 'import detectors; print(detectors.BUILD)')"
echo "detectors build: $build"
run_part "unit tests" tests/unit -q -p no:cacheprovider || rc=$?
# The detectors again as Python sources when the run above used the compiled
# build: both builds must score alike and read each other's state.
if [ "$build" = compiled ]; then
  UEBA_DETECTORS=pure run_part "detector unit tests, Python sources" tests/unit/detectors -q -p no:cacheprovider || rc=$?
fi
if ! bash deploy/local.sh up; then
  echo "services did not start; see deploy/.work/*/*.log" >&2
  exit 1
fi
run_part "integration tests" tests/integration -q -p no:cacheprovider -m integration || rc=$?
if [ $rc -eq 0 ] && [ $ran -eq 0 ]; then echo "no tests ran" >&2; exit 1; fi
exit $rc
