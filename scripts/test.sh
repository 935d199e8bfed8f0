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
# The arm64 NEON kernels (kernels_arm64.s) under emulation (qemu-aarch64
# runs the static arm64 test binary): each kernel against its pure-Go twin,
# the built-in tiny models' generations with NEON against pure Go, and the
# package's other tests but the slowest (JSON, tools: no kernel of their
# own), the Ollama ones (MWPEER_OLLAMA unset: they skip) and
# TestMappedMemory, which re-executes the test binary (qemu-user cannot
# without binfmt_misc); the NEON tests again on a CPU without SDOT. Then the
# purego build on arm64, which must run pure Go only and give the bits the
# pure-Go kernels give on amd64 (testdata/purego.golden). About two minutes on
# two busy cores.
if command -v qemu-aarch64 >/dev/null 2>&1; then
  arm64_skip='TestMappedMemory$|TestEmbeddedEngineWritesValidJSON|TestForcedToolCall|TestJSONWithMultiByteTokens|Fuzz'
  env -u MWPEER_OLLAMA -u MWPEER_OLLAMA_NATIVE GOARCH=arm64 \
    go test -exec qemu-aarch64 -timeout 15m -count=1 -skip "$arm64_skip" ./inference/llama/
  # A CPU without the dotprod extension (ARMv8.0): the kernels detect it and
  # take the SMULL/SADALP path.
  env -u MWPEER_OLLAMA -u MWPEER_OLLAMA_NATIVE QEMU_CPU=cortex-a57 GOARCH=arm64 \
    go test -exec qemu-aarch64 -timeout 10m -count=1 -run 'NEON|Kernels' ./inference/llama/
  GOARCH=arm64 go vet -tags purego ./inference/llama/...
  env -u MWPEER_OLLAMA -u MWPEER_OLLAMA_NATIVE GOARCH=arm64 \
    go test -exec qemu-aarch64 -tags purego -timeout 5m -count=1 -run 'Kernels|TestPureGoIsTheSameEverywhere' ./inference/llama/
else
  echo "skipping: qemu-aarch64 not installed (apt-get install qemu-user): the arm64 NEON kernels were not tested"
fi
