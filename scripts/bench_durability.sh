#!/usr/bin/env bash
# Backup and archive measurements (prints a report). Usage:
#   scripts/bench_durability.sh [WORKSPACES] [CHUNKS]     (defaults 10000 and 100000)
# Builds nothing: set ENCLAVE=path/to/enclave (default target/release/enclave, else target/debug/enclave).
set -euo pipefail
N=${1:-10000}
CHUNKS=${2:-100000}
BIN=${ENCLAVE:-target/release/enclave}
[ -x "$BIN" ] || BIN=target/debug/enclave
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ENCLAVE_ADMIN_TOKEN=bench-operator-token-0123456789 ENCLAVE_LOG=warn
t() { local s=$(date +%s.%N); "$@"; local e=$(date +%s.%N); echo "  took $(echo "$e - $s" | bc) s" >&2; }

if [ "$N" != 0 ]; then
echo "== $N workspaces (3 documents each) with $BIN"
"$BIN" --data-dir "$work/many" bench tenants --workspaces "$N" --sample 10 --hold 10 --keep >/dev/null || echo "(bench tenants ended early; its workspaces are kept)"
echo "-- full backup"; t "$BIN" --data-dir "$work/many" backup --to "$work/bk" | tee "$work/full.json"
sleep 3
echo "-- incremental backup, nothing changed"; t "$BIN" --data-dir "$work/many" backup --to "$work/bk" | tee "$work/incr.json"
echo "-- backup folder: $(du -sb "$work/bk" | cut -f1) bytes, $(ls "$work/bk/objects" | wc -l) objects"
echo "-- verify"; t "$BIN" backup verify --from "$work/bk" | head -5
echo "-- restore into an empty data dir"; t "$BIN" --data-dir "$work/restored" restore --from "$work/bk" | head -8
rm -rf "$work/many" "$work/restored" "$work/bk"
fi

echo "== one workspace of $CHUNKS chunks (static embedder)"
"$BIN" --data-dir "$work/big" bench search --chunks "$CHUNKS" --workspaces 1 --minilm-chunks 1 --queries 10 --keep --only fulltext >/dev/null
# The biggest workspace folder is the benchmark's big workspace.
ws=$(cd "$work/big" && du -s -- */ | sort -n | tail -1 | cut -f2 | tr -d /)
echo "-- export"; t "$BIN" --data-dir "$work/big" workspace export "$ws" --out "$work/ws.tar"
echo "   archive: $(stat -c %s "$work/ws.tar") bytes; workspace folder: $(du -sb "$work/big/$ws" | cut -f1) bytes"
org=$("$BIN" --data-dir "$work/target" org create --name Target | grep '"id"' | head -1 | sed 's/.*: "\(.*\)".*/\1/')
echo "-- import (validation, rows, vectors, index rebuild)"; t "$BIN" --data-dir "$work/target" workspace import --org "$org" "$work/ws.tar" >/dev/null
