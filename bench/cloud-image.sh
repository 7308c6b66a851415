#!/usr/bin/env bash
# The importer against the bare baselines of issue 13, in one run on this
# machine, over loopback HTTP, on two images:
#
#   cloud: built the way cloud images are, VIRTUAL_GIB of virtual disk
#          holding DATA_MIB of real files (a tar of /usr/lib), the rest
#          unallocated, converted with `qemu-img convert -c` (compressed
#          clusters);
#   dense: DENSE_MIB of random data, a plain qcow2: the worst case.
#
# For each image, two imports, each timed against its baseline:
#
#   qcow2 -> raw:   curl -o f.qcow2 && qemu-img convert -O raw   (goal: importer <= 1.5x)
#   qcow2 -> qcow2: curl -o f.qcow2 && qemu-img check            (goal: importer <= 1.5x)
#
# The importer does more than the baselines: md5, sha256 and sha512 of the
# stored image, the inspector, qemu-img info and check, the sandbox, and an
# fsync. The "+hashes" column is the baseline plus md5sum, sha256sum and
# sha512sum of its output (in parallel) and a sync, for reference. Each
# repetition runs baseline, baseline+hashes and importer back to back;
# ratio = importer / baseline. Also prints the importer's peak RSS
# (qemu-img aside; goal < 64 MiB). Asserts nothing. Removes its files.
#
# Then, for each import, the median of each step the importer timed (its
# "step" lines on stderr: the download, each qemu-img run with qemu-img's
# own CPU seconds, the conversion, the commit), and the floor of each
# import on this machine: the CPU seconds of the work no pipeline can
# leave out, over the cores. That is the three digests of the stored image
# (bench/hashspeed, Go's, one core each), the download alone (curl -o
# /dev/null) and, for raw, qemu-img's decoding alone (converting into
# null-co, which writes nothing), each the median of three runs; and no
# less than the slowest digest alone, which one core must do.
#
# Usage: bench/cloud-image.sh [REPEAT] [DATA_MIB] [VIRTUAL_GIB] [DENSE_MIB]
#        (default 3 700 2 1024; DENSE_MIB 0 leaves the dense image out)
#        IMPORTER=path runs that importer binary instead of building this one;
#        OTHER=path also times that one, after the importer, in each repetition
#        (an older build, say), on a line of its own. TARGETS=qcow2 (or raw)
#        times one import of each image only.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
REPEAT=${1:-3}
DATA_MIB=${2:-700}
VIRTUAL_GIB=${3:-2}
DENSE_MIB=${4:-1024}
TARGETS=${TARGETS:-raw qcow2}
WORK=$(mktemp -d /var/tmp/cloud-bench.XXXXXX)
SERVER=
trap cleanup EXIT
mkdir -p "$WORK/src" "$WORK/out"

if [[ -n ${IMPORTER:-} ]]; then # another build, to compare
  cp "$IMPORTER" "$WORK/importer"
else
  go build -o "$WORK/importer" ./cmd/importer
fi
[[ -z ${OTHER:-} ]] || cp "$OTHER" "$WORK/other"
go build -o "$WORK/hashspeed" ./bench/hashspeed

echo "Making the cloud-like image (${VIRTUAL_GIB} GiB virtual, ${DATA_MIB} MiB of /usr/lib, qemu-img convert -c; this takes a while)..."
{ tar cf - -C /usr/lib . 2>/dev/null || true; } | head -c "$((DATA_MIB << 20))" > "$WORK/src/cloud.raw"
truncate -s "${VIRTUAL_GIB}G" "$WORK/src/cloud.raw"
qemu-img convert -c -f raw -O qcow2 "$WORK/src/cloud.raw" "$WORK/src/cloud.qcow2"
rm "$WORK/src/cloud.raw"
IMAGES=(cloud)
if ((DENSE_MIB > 0)); then
  IMAGES+=(dense)
  echo "Making the dense image (${DENSE_MIB} MiB of random data)..."
  head -c "$((DENSE_MIB << 20))" /dev/urandom > "$WORK/src/dense.raw"
  qemu-img convert -f raw -O qcow2 "$WORK/src/dense.raw" "$WORK/src/dense.qcow2"
  rm "$WORK/src/dense.raw"
fi
ls -l "$WORK/src"

serve "$WORK/src"

# timed CMD...: prints "WALL CPU", seconds; CPU is user + system time of
# CMD and its children, which a loaded machine inflates less than WALL.
timed() {
  /usr/bin/time -f '%e %U %S' -o "$WORK/time" bash -c 'set -eo pipefail; "$@"' _ "$@" >/dev/null || { echo "failed: $*" >&2; return 1; }
  awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$WORK/time"
}
imported() { # IMAGE TARGET [BINARY]: the import, failed unless its result says it stored the image
  importer "$1.qcow2" qcow2 "$2" "${3:-}"
  if grep -q '"error"' "$WORK/result.json"; then echo "importer failed: $(cat "$WORK/result.json")" >&2; return 1; fi
  [[ -n ${3:-} ]] || grep '"step"' "$WORK/stderr" >> "$WORK/steps.$1.$2" || true
}
baseline() { # IMAGE TARGET
  curl -sS -o "$WORK/out/f.qcow2" "http://$ADDR/$1.qcow2"
  if [[ $2 == raw ]]; then
    qemu-img convert -f qcow2 -O raw "$WORK/out/f.qcow2" "$WORK/out/f.raw"
  else
    qemu-img check -f qcow2 "$WORK/out/f.qcow2"
  fi
}
hashed() { # IMAGE TARGET: the baseline, then the digests of its output and a sync
  baseline "$@"
  local out="$WORK/out/f.$2" pids=()
  md5sum "$out" & pids+=($!)
  sha256sum "$out" & pids+=($!)
  sha512sum "$out" & pids+=($!)
  wait "${pids[@]}"
  sync
}
export WORK ADDR PORT
export -f importer imported baseline hashed

# Warm the page cache of the sources so every run reads them alike.
cat "$WORK"/src/* > /dev/null

# min, median and max of numbers, one a line
spread() { sort -n | awk '{r[NR]=$1} END {m = NR % 2 ? r[(NR+1)/2] : (r[NR/2] + r[NR/2+1]) / 2; printf "min %.2f, median %.2f, max %.2f", r[1], m, r[NR]}'; }

median() { sort -n | awk '{r[NR]=$1} END {printf "%.3f", NR % 2 ? r[(NR+1)/2] : (r[NR/2] + r[NR/2+1]) / 2}'; }
# steps FILE: the median of each step's seconds (and CPU, for a child's),
# in the order the steps first came
steps() {
  [[ -s $1 ]] || { echo "    (no step timings)"; return; }
  local name
  sed -n 's/.*"step":"\([^"]*\)".*/\1/p' "$1" | awk '!seen[$0]++' | while IFS= read -r name; do
    grep -F "\"step\":\"$name\"" "$1" > "$WORK/step" || true
    printf '    %-28s %6.3f' "$name" "$(sed -n 's/.*"seconds":\([0-9.]*\).*/\1/p' "$WORK/step" | median)"
    if grep -q '"user_seconds"\|"system_seconds"' "$WORK/step"; then
      printf '  (CPU %.3f)' "$(awk '{u = 0; s = 0
        if (match($0, /"user_seconds":[0-9.]+/)) u = substr($0, RSTART + 15, RLENGTH - 15)
        if (match($0, /"system_seconds":[0-9.]+/)) s = substr($0, RSTART + 17, RLENGTH - 17)
        print u + s}' "$WORK/step" | median)"
    fi
    echo
  done
}

echo
echo "Seconds: wall (CPU = user + system, children included). ratio = importer / baseline, wall and CPU."
printf '%-22s %2s %15s %15s %15s %6s %6s %8s\n' "run" "#" "baseline" "+hashes" "importer" "wall" "CPU" "peak RSS"
declare -A BASE_CPU BASE_WALL
for image in "${IMAGES[@]}"; do
  for target in $TARGETS; do
    walls=() cpus=() base_cpus=() base_walls=() others=()
    for i in $(seq "$REPEAT"); do
      drop; read -r w_base c_base < <(timed baseline $image $target)
      drop; read -r w_hash c_hash < <(timed hashed $image $target)
      drop; read -r w_imp c_imp < <(timed imported $image $target)
      [[ -n $w_base && -n $w_hash && -n $w_imp ]] || exit 1
      rss=$(rss_mib)
      if [[ -n ${OTHER:-} ]]; then
        drop; read -r w_other c_other < <(timed imported $image $target "$WORK/other")
        [[ -n $w_other ]] || exit 1
        others+=("$(echo "$w_other / $w_base" | bc -l)")
      fi
      base_cpus+=("$c_base") base_walls+=("$w_base")
      walls+=("$(echo "$w_imp / $w_base" | bc -l)")
      cpus+=("$(echo "$c_imp / $c_base" | bc -l)")
      printf '%-22s %2d %6.2f (%6.2f) %6.2f (%6.2f) %6.2f (%6.2f) %6.2f %6.2f %4s MiB  load %s\n' "$image qcow2 -> $target" "$i" \
        "$w_base" "$c_base" "$w_hash" "$c_hash" "$w_imp" "$c_imp" "${walls[-1]}" "${cpus[-1]}" "$rss" "$(cut -d' ' -f1 /proc/loadavg)"
      if [[ -n ${OTHER:-} ]]; then
        printf '%-22s %2d %33s %6.2f (%6.2f) %6.2f  (other importer)\n' "$image qcow2 -> $target" "$i" "" "$w_other" "$c_other" "${others[-1]}"
      fi
    done
    printf '%-22s    wall ratio %s; CPU ratio %s (goal: wall <= 1.5)\n' "$image qcow2 -> $target" \
      "$(printf '%s\n' "${walls[@]}" | spread)" "$(printf '%s\n' "${cpus[@]}" | spread)"
    if [[ -n ${OTHER:-} ]]; then
      printf '%-22s    other importer: wall ratio %s\n' "$image qcow2 -> $target" "$(printf '%s\n' "${others[@]}" | spread)"
    fi
    BASE_CPU[$image.$target]=$(printf '%s\n' "${base_cpus[@]}" | median)
    BASE_WALL[$image.$target]=$(printf '%s\n' "${base_walls[@]}" | median)
  done
done
drop

echo
echo "The importer's steps, median seconds over the runs (qemu-img: wall, and its own user + system CPU):"
for image in "${IMAGES[@]}"; do
  for target in $TARGETS; do
    echo "  $image qcow2 -> $target:"
    steps "$WORK/steps.$image.$target"
  done
done

# cpu3 CMD...: the median CPU seconds of three runs of CMD
cpu3() {
  local i
  for i in 1 2 3; do timed "$@" | cut -d' ' -f2; done | median
}
# floor TARGET BYTES EXTRA_CPU WHAT: prints the floor of cloud qcow2 -> TARGET,
# whose stored image is BYTES long, with EXTRA_CPU seconds of other work
floor() {
  echo
  echo "Floor of cloud qcow2 -> $1 on this machine: the three digests of the $2 bytes stored, one core each (Go's),"
  "$WORK/hashspeed" -bytes "$2" | sed 's/^/  /' | tee "$WORK/hashes"
  local f
  f=$(awk -v n="$(nproc)" -v extra="$3" '$1 == "all" {all = $2} $1 != "all" && $(NF-1) > one {one = $(NF-1)}
    END {f = (all + extra) / n; if (one > f) f = one; print f}' "$WORK/hashes")
  printf '  + %s: %.2f CPU s; over %d cores, and no less than the slowest digest: %.2f s of wall at the least,\n' "$4" "$3" "$(nproc)" "$f"
  printf '  %.2f times the baseline'"'"'s median wall (%.2f s).\n' "$(echo "$f / ${BASE_WALL[cloud.$1]}" | bc -l)" "${BASE_WALL[cloud.$1]}"
}
download_cpu=$(cpu3 curl -sS -o /dev/null "http://$ADDR/cloud.qcow2")
if [[ -n ${BASE_CPU[cloud.raw]:-} ]]; then
  decode_cpu=$(cpu3 qemu-img convert -n -f qcow2 "$WORK/src/cloud.qcow2" --target-image-opts "driver=null-co,size=$((VIRTUAL_GIB << 30))")
  floor raw "$((VIRTUAL_GIB << 30))" "$(echo "$download_cpu + $decode_cpu" | bc -l)" \
    "the download ($download_cpu) and qemu-img's decoding ($decode_cpu)"
fi
if [[ -n ${BASE_CPU[cloud.qcow2]:-} ]]; then
  floor qcow2 "$(stat -c %s "$WORK/src/cloud.qcow2")" "$download_cpu" "the download ($download_cpu)"
fi

echo
echo "$(nproc) cores; load average now: $(cut -d' ' -f1-3 /proc/loadavg)."
