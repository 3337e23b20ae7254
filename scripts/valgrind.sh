#!/usr/bin/env bash
# Runs the test suite (loom aside) under valgrind's memcheck: any invalid
# read or write, use of uninitialised memory, or definite leak fails the run.
#
#   scripts/valgrind.sh                  # every test binary
#   scripts/valgrind.sh stress           # only the test binary `stress`
#   scripts/valgrind.sh all reentrancy:: # and in it only the matching tests
#
# Most integration tests are modules of the one binary `all` (tests/all/);
# the arguments after the binary's name go to it as its test filter. The
# library's unit tests are the binary `ctxtree`.
#
# Tests read CTXTREE_VALGRIND=1 and shrink their loop counts (memcheck runs
# code some 20-50x slower); the behaviour checked is the same.
#
# Leaks: only *definite* leaks fail the run. "Possibly lost" blocks are the
# stacks and handles of threads that live until exit by design: async-io's
# driver thread and the executors' worker pools, outside this crate.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind: installing with apt-get"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

filter="${1:-}"
test_filter=("${@:2}")
export CTXTREE_VALGRIND=1
# The same debug test binaries `cargo test` builds, so CI compiles nothing
# twice.

mapfile -t bins < <(cargo test --no-run --lib --tests --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])
')

status=0
for bin in "${bins[@]}"; do
  name=$(basename "$bin")
  case "$name" in loom-*) continue ;; esac
  if [ -n "$filter" ] && [[ "${name%-*}" != "$filter" ]]; then continue; fi
  echo "== valgrind $name"
  # --test-threads=2: real concurrency, at a pace memcheck can follow.
  if ! valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
      --suppressions=scripts/valgrind.supp "$bin" --test-threads=2 -q "${test_filter[@]}"; then
    echo "!! valgrind found errors in $name"
    status=1
  fi
done
exit $status
