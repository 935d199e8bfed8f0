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
# The Ollama built with -march=native (llama.cpp's SIMD kernels) is used when
# it is already there (OLLAMA_NATIVE=1 ../shared/tools/build-ollama builds it
# in minutes, so this script does not).
native=$HOME/.cache/mwpeer-ollama/ollama-v0.17.4-native
if [ -z "${MWPEER_OLLAMA_NATIVE:-}" ] && [ -x "$native" ]; then
  export MWPEER_OLLAMA_NATIVE=$native
fi
echo "MWPEER_OLLAMA=${MWPEER_OLLAMA:-<unset: Ollama tests will skip>}"
echo "MWPEER_OLLAMA_NATIVE=${MWPEER_OLLAMA_NATIVE:-<unset: native Ollama tests will skip>}"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
GOARCH=arm64 go vet ./...
go test -race -timeout 60m -count=1 ./... "$@"
# The pure-Go kernels: the oracle of the SIMD ones, held to the portable
# llama.cpp build's arithmetic by the anchor tests.
go test -tags purego -timeout 20m -count=1 ./inference/llama/... "$@"
