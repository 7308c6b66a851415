#!/usr/bin/env bash
# Importer throughput against its baselines, in one run on this machine,
# over loopback HTTP:
#   raw:   curl -o (the I/O baseline)              vs importer raw -> raw
#   qcow2: curl -o, then qemu-img convert (the sequential baseline) vs importer qcow2 -> raw
# and the importer's peak RSS (qemu-img aside). Prints ratios; asserts nothing.
#
# Usage: bench/importer.sh [SIZE_GIB]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_GIB=${1:-2}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/importer-bench.XXXXXX)}
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/out"

go build -o "$WORK/importer" ./cmd/importer
go build -o "$WORK/fileserver" ./bench/fileserver

echo "Making a ${SIZE_GIB} GiB raw image (random data) and its qcow2..."
head -c "$((SIZE_GIB << 30))" /dev/urandom > "$WORK/src/disk.raw"
qemu-img convert -f raw -O qcow2 "$WORK/src/disk.raw" "$WORK/src/disk.qcow2"

"$WORK/fileserver" -dir "$WORK/src" > "$WORK/addr" &
SERVER=$!
for _ in $(seq 50); do [[ -s $WORK/addr ]] && break; sleep 0.1; done
ADDR=$(cat "$WORK/addr")
PORT=${ADDR##*:}

seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
drop() { rm -f "$WORK"/out/* "$WORK"/out/.??* 2>/dev/null || true; sync; }
importer() {
  "$WORK/importer" --source="http://$ADDR/$1" --source-format="$2" --target-format=raw \
    --dest="$WORK/out" --scratch-dir="$WORK/out" --image-id=bench --result-file="$WORK/result.json" \
    --allowed-hosts=127.0.0.1 --allowed-ports="$PORT" 2>"$WORK/stderr"
}
rss_mib() { sed -n 's/.*"peak_rss_bytes":\([0-9]*\).*/\1/p' "$WORK/stderr" | awk '{printf "%.1f", $1/1048576}'; }

# Warm the page cache of the sources so every run reads them alike.
cat "$WORK/src/disk.raw" "$WORK/src/disk.qcow2" > /dev/null

drop; t_curl=$(seconds curl -sS -o "$WORK/out/disk.raw" "http://$ADDR/disk.raw")
drop; t_raw=$(seconds importer disk.raw raw); rss_raw=$(rss_mib)
drop; t_seq=$(seconds bash -c "curl -sS -o '$WORK/out/d.qcow2' 'http://$ADDR/disk.qcow2' && qemu-img convert -f qcow2 -O raw '$WORK/out/d.qcow2' '$WORK/out/d.raw'")
drop; t_q=$(seconds importer disk.qcow2 qcow2); rss_q=$(rss_mib)
drop

gib=$SIZE_GIB
printf '\n%-40s %8s %10s\n' "run (${gib} GiB)" "seconds" "GiB/s"
row() { printf '%-40s %8.2f %10.2f\n' "$1" "$2" "$(echo "$gib / $2" | bc -l)"; }
row "curl -o raw (baseline)" "$t_curl"
row "importer raw -> raw" "$t_raw"
row "curl + qemu-img convert (baseline)" "$t_seq"
row "importer qcow2 -> raw" "$t_q"
printf '\nraw:   importer throughput / curl throughput = %.2f (goal >= 0.9)\n' "$(echo "$t_curl / $t_raw" | bc -l)"
printf 'qcow2: importer throughput / sequential     = %.2f (goal > 1)\n' "$(echo "$t_seq / $t_q" | bc -l)"
printf 'importer peak RSS: raw %s MiB, qcow2 %s MiB (goal < 64 MiB)\n' "$rss_raw" "$rss_q"
