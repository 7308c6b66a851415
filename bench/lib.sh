# Sourced by the importer's benchmarks (importer.sh, unpack.sh,
# cloud-image.sh): their file server, their clean slate between runs, and
# the importer as they all run it. WORK is the benchmark's directory, with
# out/ in it for what the runs store.

# cleanup stops the file server, if it still runs, and removes WORK; the
# benchmarks trap it on EXIT. It must not fail half-way under set -e, or
# gigabytes would be left behind.
cleanup() {
  [[ -z ${SERVER:-} ]] || kill "$SERVER" 2>/dev/null || true
  rm -rf "$WORK"
}

# serve DIR builds the file server and starts it on DIR, over loopback, in
# the background; it sets SERVER (its pid), ADDR and PORT.
serve() {
  go build -o "$WORK/fileserver" ./bench/fileserver
  "$WORK/fileserver" -dir "$1" > "$WORK/addr" &
  SERVER=$!
  for _ in $(seq 50); do [[ -s $WORK/addr ]] && break; sleep 0.1; done
  ADDR=$(cat "$WORK/addr")
  PORT=${ADDR##*:}
}

# seconds CMD... prints the wall seconds CMD took.
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

# drop removes what the last run stored and syncs, so that every run
# starts alike.
drop() { rm -f "$WORK"/out/* "$WORK"/out/.??* 2>/dev/null || true; sync; }

# importer SOURCE FORMAT TARGET [BINARY] imports SOURCE, a file the server
# serves, into $WORK/out, with this build's importer or BINARY; its result
# goes to $WORK/result.json, its stderr (step timings, peak RSS) to
# $WORK/stderr.
importer() {
  "${4:-$WORK/importer}" --source="http://$ADDR/$1" --source-format="$2" --target-format="$3" \
    --dest="$WORK/out" --scratch-dir="$WORK/out" --image-id=bench --result-file="$WORK/result.json" \
    --allowed-hosts=127.0.0.1 --allowed-ports="$PORT" 2>"$WORK/stderr"
}

# rss_mib prints the last import's peak RSS in MiB (qemu-img aside).
rss_mib() { sed -n 's/.*"peak_rss_bytes":\([0-9]*\).*/\1/p' "$WORK/stderr" | awk '{printf "%.1f", $1/1048576}'; }
