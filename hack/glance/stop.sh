#!/usr/bin/env bash
# Stops the Glance that hack/glance/start.sh started (by its PID and process group).
set -uo pipefail
PORT=${1:-19292}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${2:-$ROOT/bin/real-glance/run-$PORT}
PIDFILE=$DIR/glance-api.pid
[[ -f $PIDFILE ]] || exit 0
PID=$(cat "$PIDFILE")
if kill -0 "$PID" 2>/dev/null && grep -q "glance-api --config-file $DIR/" <<<"$(tr '\0' ' ' <"/proc/$PID/cmdline")"; then
  kill -TERM -- "-$PID" 2>/dev/null || kill -TERM "$PID"
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$PID" 2>/dev/null
fi
rm -f "$PIDFILE"
echo "stopped glance-api"
