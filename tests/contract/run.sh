#!/usr/bin/env bash
# The API contract fuzzed: starts the server on a fresh data dir, makes an org, a workspace
# (with a document, an agent) and a workspace-scoped API key, then runs schemathesis against
# /openapi.json twice: with the API key and with the operator token. Fails on a 5xx, an answer
# that violates the document (status, content type, schema), or a crash.
#
#   tests/contract/run.sh [path/to/enclave]     (default target/debug/enclave)
#   EXAMPLES=20 tests/contract/run.sh            (more cases per operation; default 8)
#   CHECKS=all tests/contract/run.sh             (schemathesis checks beyond the four CI enforces)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/enclave}
# A free port unless one is given: another server on a fixed port would answer in our place.
port=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
examples=${EXAMPLES:-8}
base="http://127.0.0.1:$port"
tmp=$(mktemp -d)
ENCLAVE_DATA_DIR="$tmp/data" ENCLAVE_LISTEN="127.0.0.1:$port" "$bin" serve >"$tmp/log" 2>&1 &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# Ready when our server answers and has printed its operator token (so the answer is ours).
op=
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || { echo "the server exited"; cat "$tmp/log"; exit 1; }
  op=$(grep -o 'enc_op_[A-Za-z0-9_-]*' "$tmp/log" | head -1 || true)
  [ -n "$op" ] && curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
[ -n "$op" ] || { echo "no operator token in the log"; cat "$tmp/log"; exit 1; }
curl -fsS "$base/healthz" >/dev/null || { echo "the server does not answer on $base"; cat "$tmp/log"; exit 1; }

# call METHOD PATH BODY TOKEN: prints the JSON answer, fails on an error status.
call() {
  curl -fsS -X "$1" "$base$2" -H "Authorization: Bearer $4" -H 'Content-Type: application/json' -d "$3"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
org=$(call POST /v1/orgs '{"name":"Contract"}' "$op" | field id)
ws=$(call POST "/v1/orgs/$org/workspaces" '{"name":"Fuzzed"}' "$op" | field id)
key=$(call POST "/v1/workspaces/$ws/api-keys" \
  '{"name":"fuzz","scopes":["search","chat","ingest","manage"]}' "$op" | field key)
call PUT "/v1/workspaces/$ws/embedder" '{"kind":"static"}' "$op" >/dev/null
added=$(call POST "/v1/workspaces/$ws/documents?wait=true" \
  '{"title":"Guide","text":"Enclave keeps every tenant apart.","external_id":"guide"}' "$op")
export ENCLAVE_FUZZ_ORG=$org ENCLAVE_FUZZ_WS=$ws
ENCLAVE_FUZZ_DOC=$(echo "$added" | field id)
ENCLAVE_FUZZ_JOB=$(echo "$added" | field job_id)
ENCLAVE_FUZZ_AGENT=$(call POST "/v1/workspaces/$ws/agents" '{"name":"Helper"}' "$op" | field id)
export ENCLAVE_FUZZ_DOC ENCLAVE_FUZZ_JOB ENCLAVE_FUZZ_AGENT

status=0
for who in api_key operator; do
  token=$key
  [ "$who" = operator ] && token=$op
  echo "== schemathesis with the $who ($examples examples per operation)"
  schemathesis --config-file tests/contract/schemathesis.toml run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks "${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}" \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" \
    --workers 1 \
    --request-timeout 30 \
    --seed 1 \
    --no-color \
    --suppress-health-check all \
    --generation-database none \
    ${EXTRA:-} || status=1
done
if ! kill -0 "$pid" 2>/dev/null; then
  echo "the server crashed"; tail -50 "$tmp/log"; exit 1
fi
curl -fsS "$base/healthz" >/dev/null || { echo "the server stopped answering"; exit 1; }
exit "$status"
