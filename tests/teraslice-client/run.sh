#!/usr/bin/env bash
# Checks `tem mock-server --teraslice` with the real Teraslice client, ts-topy (PyPI), which
# must load and display every endpoint. Installs ts-topy into a cached virtualenv on first use.
#   tests/teraslice-client/run.sh [path/to/tem]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tem="${1:-$root/target/debug/tem}"
version="0.5.1"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tem-ci/ts-topy-$version"

command -v python3 >/dev/null || { echo "python3 is needed for the ts-topy check" >&2; exit 2; }
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import ts_topy" 2>/dev/null; then
  echo "installing ts-topy $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "ts-topy==$version"
fi
[[ -x "$tem" ]] || (cd "$root" && cargo build --quiet -p tem-cli --bin tem)

log="$(mktemp)"
"$tem" mock-server --teraslice --port 0 --seed 7 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 1 100); do
  url="$(grep -o 'http://[0-9.:]*' "$log" | head -n 1 || true)"
  [[ -n "$url" ]] && break
  sleep 0.1
done
[[ -n "$url" ]] || { echo "tem mock-server did not start:" >&2; cat "$log" >&2; exit 1; }
timeout 300 "$venv/bin/python" "$here/check.py" "$url"
curl -fsS -X POST "$url/shutdown" >/dev/null
wait "$pid"
