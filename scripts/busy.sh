#!/usr/bin/env bash
# Keeps the machine busy with real work while something else runs, so that
# CI runs the test suite on a loaded machine: a test that only passes on an
# idle machine is a defect. The load is the embedded engine's own test
# binary (CPU-bound matrix work, allocation, model files on disk), run again
# and again. It stops when killed (SIGTERM), and by itself after
# $BUSY_SECONDS (default 80 minutes).
#   ./scripts/busy.sh & busy=$!; ...; kill $busy
set -uo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
child=
stop() { [ -n "$child" ] && kill "$child" 2>/dev/null; rm -rf "$dir"; exit 0; }
trap stop TERM INT EXIT
go test -c -o "$dir/llama.test" ./inference/llama/ || exit 1
end=$(( $(date +%s) + ${BUSY_SECONDS:-4800} ))
runs=0
while [ "$(date +%s)" -lt "$end" ]; do
  # Without $MWPEER_OLLAMA the tests that compare with Ollama skip; the
  # kernels, the engine's own tests and its small benchmarks run.
  (cd inference/llama && env -u MWPEER_OLLAMA timeout 10m "$dir/llama.test" -test.count=1 -test.bench Tiny -test.benchtime 2s >/dev/null 2>&1) &
  child=$!
  wait "$child"
  child=
  runs=$((runs + 1))
done
