#!/usr/bin/env bash
# Compressed sources: the importer (download, decompress, inspect, convert,
# store, in one pass while the bytes stream) against the sequential way,
# `curl | xz -d > f && qemu-img convert`, in one run on this machine, over
# loopback HTTP, on a cloud-like image: 2 GiB of virtual disk holding
# about 700 MiB of data (a tar of /usr/lib), the rest zeros.
#
#   qcow2.{xz,zst,gz} -> raw:  curl | DEC > f.qcow2 && qemu-img convert -O raw   vs  importer
#   raw.{xz,zst}      -> raw:  curl | DEC > f.raw (sparse)                        vs  importer
#
# DEC is xz -d, zstd -d, and pigz -d (gzip -d without pigz). The importer
# does more than the baseline: it hashes the stored image (md5 and sha512,
# Glance's checksum and os_hash_value) and syncs it to disk; the "same work"
# column adds `md5sum & sha512sum; sync` to the baseline. The uncompressed
# qcow2 row is the importer without unpacking, for reference. Prints
# seconds, the ratios baseline/importer (> 1: the importer is faster) and
# the importer's peak RSS. Asserts nothing. Removes its files when done.
#
# First, each decoder's throughput on the compressed files (decompressed MB
# per second of wall time and per CPU second, to /dev/null): xz -d, xz -d -T0,
# zstd -d, pigz -d and the importer's own (internal/unpack's
# BenchmarkDecoders: sandboxed xz, and the Go decoders).
#
# Usage: bench/unpack.sh [DATA_MIB] [VIRTUAL_GIB]   (default 700 2)
#   BENCH_SRC=dir   keep the images in dir and reuse them on the next run
#                   (compressing them takes minutes; on a loaded machine, tens)
#   BENCH_ROWS="disk.qcow2.xz disk.raw.zst"   only these rows
#   BENCH_DECODERS=0   skip the decoders' throughput
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DATA_MIB=${1:-700}
VIRTUAL_GIB=${2:-2}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/unpack-bench.XXXXXX)}
SRC=${BENCH_SRC:-$WORK/src}
SERVER=
trap cleanup EXIT
mkdir -p "$SRC" "$WORK/out"
GZ=gzip
command -v pigz >/dev/null && GZ=pigz

go build -o "$WORK/importer" ./cmd/importer
go test -c -o "$WORK/unpack.test" ./internal/unpack

if [[ ! -s $SRC/disk.qcow2.gz ]]; then
echo "Making a ${VIRTUAL_GIB} GiB image with ${DATA_MIB} MiB of data, as qcow2 and raw, compressed (this takes a while)..."
tar cf - -C /usr/lib . 2>/dev/null | head -c "$((DATA_MIB << 20))" > "$SRC/disk.raw" || true
truncate -s "${VIRTUAL_GIB}G" "$SRC/disk.raw"
qemu-img convert -f raw -O qcow2 "$SRC/disk.raw" "$SRC/disk.qcow2"
# Compression levels that keep the set-up short; decompression speed
# hardly depends on them. -T0 as distributions do (xz: independent blocks).
xz -T0 -3 -k -c "$SRC/disk.qcow2" > "$SRC/disk.qcow2.xz"
xz -T0 -3 -k -c "$SRC/disk.raw" > "$SRC/disk.raw.xz"
zstd -q -T0 -10 -c "$SRC/disk.qcow2" > "$SRC/disk.qcow2.zst"
zstd -q -T0 -10 -c "$SRC/disk.raw" > "$SRC/disk.raw.zst"
$GZ -6 -c "$SRC/disk.qcow2" > "$SRC/disk.qcow2.gz"
rm "$SRC/disk.raw"
fi
ls -l "$SRC"

echo
echo "Decoders (to /dev/null), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg):"
decode() { # LABEL FILE SIZE COMMAND...
  local label=$1 file=$2 size=$3 e u s; shift 3
  /usr/bin/time -o "$WORK/time" -f "%e %U %S" "$@" > /dev/null 2>"$WORK/stderr" || { echo "$label failed: $(tail -3 "$WORK/stderr")"; return 1; }
  read -r e u s < <(tail -1 "$WORK/time")
  printf '%-16s %-24s %6.1fs %7.1f MB/s  %6.1f CPU s %7.1f MB/CPU s\n' "$(basename "$file")" "$label" "$e" \
    "$(echo "$size / 1000000 / $e" | bc -l)" "$(echo "$u + $s" | bc -l)" "$(echo "$size / 1000000 / ($u + $s)" | bc -l)"
}
for f in "$SRC"/disk.*.*; do
  [[ ${BENCH_DECODERS:-1} == 0 ]] && break
  case $f in *.xz) dec=xz;; *.zst) dec=zstd;; *.gz) dec=$GZ;; *) continue;; esac
  size=$($dec -dc "$f" | wc -c)
  decode "$dec -d" "$f" "$size" "$dec" -dc "$f"
  [[ $dec == xz ]] && decode "xz -d -T0" "$f" "$size" xz -dc -T0 "$f"
  for d in sandboxed Go; do
    [[ $d == sandboxed && $dec != xz ]] && continue
    name=$(basename "$f")
    decode "importer ($d)" "$f" "$size" env UNPACK_BENCH_DIR="$SRC" "$WORK/unpack.test" -test.run '^$' \
      -test.bench "Decoders/^${name//./\\.}\$/$d\$" -test.benchtime 1x
  done
done

serve "$SRC"

sequential() { # FILE DECOMPRESSOR FORMAT
  local fetch="curl -sS 'http://$ADDR/$1' | $2 -d"
  [[ $2 == cat ]] && fetch="curl -sS 'http://$ADDR/$1'"
  if [[ $3 == qcow2 ]]; then
    bash -c "set -o pipefail; $fetch > '$WORK/out/f.qcow2' && qemu-img convert -f qcow2 -O raw '$WORK/out/f.qcow2' '$WORK/out/f.raw'"
  else
    bash -c "set -o pipefail; $fetch > '$WORK/out/f.raw'"
  fi
}
same_work() { # the baseline, then the stored image's md5 and sha512 and a sync, as the importer does
  sequential "$@" || return
  md5sum "$WORK/out/f.raw" >/dev/null &
  local md5=$!
  sha512sum "$WORK/out/f.raw" >/dev/null
  wait $md5
  sync
}

# Warm the page cache of the sources so every run reads them alike.
cat "$SRC"/* > /dev/null

printf '\n%-16s %-37s %8s %9s %8s %6s %6s %9s\n' "source -> raw" "baseline" "baseline" "same work" "importer" "ratio" "same" "peak RSS"
for row in "disk.qcow2.xz xz qcow2" "disk.qcow2.zst zstd qcow2" "disk.qcow2.gz $GZ qcow2" "disk.raw.xz xz raw" "disk.raw.zst zstd raw" "disk.qcow2 cat qcow2"; do
  read -r file dec format <<<"$row"
  [[ -z ${BENCH_ROWS:-} || " $BENCH_ROWS " == *" $file "* ]] || continue
  drop; t_seq=$(seconds sequential "$file" "$dec" "$format")
  drop; t_same=$(seconds same_work "$file" "$dec" "$format")
  drop; t_imp=$(seconds importer "$file" "$format" raw)
  [[ $(sed -n 's/.*"error":"\([^"]*\)".*/\1/p' "$WORK/result.json") == "" ]] || { echo "importer failed: $(cat "$WORK/result.json")"; exit 1; }
  base="curl | $dec -d > f"
  [[ $dec == cat ]] && base="curl -o f"
  [[ $format == qcow2 ]] && base="$base && qemu-img convert"
  printf '%-16s %-37s %7.1fs %8.1fs %7.1fs %6.2f %6.2f %5s MiB\n' "$file" "$base" "$t_seq" "$t_same" "$t_imp" \
    "$(echo "$t_seq / $t_imp" | bc -l)" "$(echo "$t_same / $t_imp" | bc -l)" "$(rss_mib)"
done
drop
echo
echo "ratio = baseline / importer, same = same work / importer (> 1: the importer is faster). $(nproc) cores; load average now: $(cut -d' ' -f1-3 /proc/loadavg)."
