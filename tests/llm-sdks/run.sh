#!/usr/bin/env bash
# Checks `tem mock-server --kind openai|anthropic` with the official Python SDKs (PyPI `openai`
# and `anthropic`): plain and streamed calls parse, usage is right, a 429 is the SDK's
# RateLimitError with its retry-after. Installs the SDKs into a virtualenv under target/ on first use.
#   tests/llm-sdks/run.sh [path/to/tem]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tem="${1:-$root/target/debug/tem}"
openai_version="3.63.0"
anthropic_version="2.17.0"
venv="$root/target/llm-sdks/openai-$openai_version-anthropic-$anthropic_version"

command -v python3 >/dev/null || { echo "python3 is needed for the SDK check" >&2; exit 2; }
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import openai, anthropic" 2>/dev/null; then
  echo "installing openai $openai_version and anthropic $anthropic_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "openai==$openai_version" "anthropic==$anthropic_version"
fi
[[ -x "$tem" ]] || (cd "$root" && cargo build --quiet -p tem-cli --bin tem)

pids=()
logs=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -f "${logs[@]}"
}
trap cleanup EXIT

# Starts `tem mock-server ARGS` on a free port and prints its URL.
start() {
  local log
  log="$(mktemp)"
  logs+=("$log")
  "$tem" mock-server --port 0 "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    url="$(grep -o 'http://[0-9.:]*' "$log" | head -n 1 || true)"
    [[ -n "$url" ]] && { echo "$url"; return; }
    sleep 0.1
  done
  echo "tem mock-server $* did not start:" >&2
  cat "$log" >&2
  exit 1
}

quiet=(--first-token 0ms --per-token 1ms,2ms --seed 7 --api-key sk-test)
openai_url="$(start --kind openai --rpm 1000 --tpm 1000000 "${quiet[@]}")"
openai_tight="$(start --kind openai --rpm 1 --tpm 1000000 "${quiet[@]}")"
anthropic_url="$(start --kind anthropic --rpm 1000 --itpm 1000000 --otpm 100000 "${quiet[@]}")"
anthropic_tight="$(start --kind anthropic --rpm 1 "${quiet[@]}")"

timeout 300 "$venv/bin/python" "$here/check.py" "$openai_url" "$openai_tight" "$anthropic_url" "$anthropic_tight"
for url in "$openai_url" "$openai_tight" "$anthropic_url" "$anthropic_tight"; do
  curl -fsS -X POST "$url/shutdown" >/dev/null
done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
