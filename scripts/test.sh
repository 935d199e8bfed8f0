#!/usr/bin/env bash
# Runs mwpeer's whole test suite. Integration tests that need a real Ollama
# use $MWPEER_OLLAMA; when it is unset this script builds one with
# ../shared/tools/build-ollama if that tool is there, and otherwise those
# tests skip with a message saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MWPEER_OLLAMA:-}" ] && [ -x ../shared/tools/build-ollama ]; then
  MWPEER_OLLAMA=$(../shared/tools/build-ollama | tail -n 1)
  export MWPEER_OLLAMA
fi
echo "MWPEER_OLLAMA=${MWPEER_OLLAMA:-<unset: Ollama tests will skip>}"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -race -timeout 60m -count=1 ./... "$@"
