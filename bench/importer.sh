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
source bench/lib.sh
SIZE_GIB=${1:-2}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/importer-bench.XXXXXX)}
SERVER=
trap cleanup EXIT
mkdir -p "$WORK/src" "$WORK/out"

go build -o "$WORK/importer" ./cmd/importer

echo "Making a ${SIZE_GIB} GiB raw image (random data) and its qcow2..."
head -c "$((SIZE_GIB << 30))" /dev/urandom > "$WORK/src/disk.raw"
qemu-img convert -f raw -O qcow2 "$WORK/src/disk.raw" "$WORK/src/disk.qcow2"
serve "$WORK/src"

# Warm the page cache of the sources so every run reads them alike.
cat "$WORK/src/disk.raw" "$WORK/src/disk.qcow2" > /dev/null

drop; t_curl=$(seconds curl -sS -o "$WORK/out/disk.raw" "http://$ADDR/disk.raw")
drop; t_raw=$(seconds importer disk.raw raw raw); rss_raw=$(rss_mib)
drop; t_seq=$(seconds bash -c "curl -sS -o '$WORK/out/d.qcow2' 'http://$ADDR/disk.qcow2' && qemu-img convert -f qcow2 -O raw '$WORK/out/d.qcow2' '$WORK/out/d.raw'")
drop; t_q=$(seconds importer disk.qcow2 qcow2 raw); rss_q=$(rss_mib)
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
