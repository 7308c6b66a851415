#!/usr/bin/env bash
# Gates that can fail. Shows that `make test-e2e` fails when a test fails and passes when tests
# pass: runs the target's own recipe (make -o run: without bringing the cluster up) on
# test/e2e/gate, whose TestFails fails on purpose. And refuses `cmd | grep -q` in the scripts
# (hack, .ci, the Makefile, bench): under pipefail, grep -q exits at the first match, cmd may
# die of SIGPIPE, and the pipeline fails at random. A few seconds; no cluster needed.
set -euo pipefail
cd "$(dirname "$0")/.."

if grep -rnE '^[^#]*\|[[:space:]]*grep[[:space:]]+(-[[:alnum:]]*q|--quiet)' hack .ci Makefile bench; then
  echo "FAIL: a pipe into grep -q fails at random under pipefail: write grep -q PATTERN <<<\"\$(cmd)\""; exit 1
fi

e2e() { GATE_CHECK=1 make --no-print-directory -o run test-e2e E2E_PACKAGES=./test/e2e/gate E2E_RUN="$1" >"$out" 2>&1; }
out=$(mktemp); trap 'rm -f "$out"' EXIT

if ! e2e '^TestPasses$'; then
  cat "$out"; echo "FAIL: make test-e2e failed on a passing test"; exit 1
fi
if e2e '^TestFails$'; then
  cat "$out"; echo "FAIL: make test-e2e exited 0 on a failing test"; exit 1
fi
grep -E -- '^--- FAIL: TestFails' "$out" >/dev/null || { cat "$out"; echo "FAIL: make test-e2e failed, but not because of the test"; exit 1; }
echo "make test-e2e: exit 0 on a passing test, non-zero on a failing one"
