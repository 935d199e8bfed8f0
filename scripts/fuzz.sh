#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a bounded time, one at a time,
# and prints the executions each one made. A target that finds a crasher
# fails the run; go test writes the input to the package's
# testdata/fuzz/<target>/, where it becomes a seed once the bug is fixed.
#
#   scripts/fuzz.sh                  every target, FUZZTIME (default 20s) each
#   scripts/fuzz.sh ./experts/...    the targets of some packages
#   FUZZTIME=5s scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20s}
# Minimizing a new interesting input can take a worker away for a minute;
# bound it so the time goes to fuzzing.
minimize=${FUZZMINIMIZETIME:-5s}
patterns=("$@")
[ ${#patterns[@]} -gt 0 ] || patterns=(./...)

# Packages whose tests define a fuzz target (grep is cheap); each package's
# test binary then lists its targets itself (-test.list '^Fuzz', what
# go test -list runs).
mapfile -t pkgs < <(go list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' "${patterns[@]}" |
  while read -r pkg dir files; do
    for f in $files; do
      if grep -q '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' "$dir/$f"; then echo "$pkg"; break; fi
    done
  done)

failed=()
total=0
start=$SECONDS
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for pkg in "${pkgs[@]}"; do
  # One instrumented test binary per package serves all its targets.
  dir=$(go list -f '{{.Dir}}' "$pkg")
  # (go vet ran with the suite.)
  if ! go test -c -vet=off -fuzz . -o "$bin/fuzz.test" "$pkg"; then
    failed+=("$pkg (build)")
    continue
  fi
  mapfile -t targets < <(cd "$dir" && "$bin/fuzz.test" -test.list '^Fuzz' | grep '^Fuzz' || true)
  for target in "${targets[@]}"; do
    out=$(mktemp)
    if (cd "$dir" && "$bin/fuzz.test" -test.run '^$' -test.fuzz "^${target}\$" -test.fuzztime "$fuzztime" \
      -test.fuzzminimizetime "$minimize" -test.fuzzcachedir "$(go env GOCACHE)/fuzz/$pkg") >"$out" 2>&1; then
      status=ok
    else
      status=FAIL
      failed+=("$pkg $target")
    fi
    execs=$(grep -o 'execs: [0-9]*' "$out" | tail -n 1 | grep -o '[0-9]*' || true)
    total=$((total + 1))
    printf '%-4s %-36s %-24s %10s execs in %s\n' "$status" "${pkg#github.com/mwpeer/mwpeer/}" "$target" "${execs:-0}" "$fuzztime"
    if [ "$status" = FAIL ]; then cat "$out"; fi
    rm -f "$out"
  done
done
echo "fuzzed $total targets in $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed (their inputs are in the packages' testdata/fuzz/):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
