#!/usr/bin/env bash
# Records the exchanges the shim is held to beyond the original battery: each request is sent
# with `curl -si` to a Glance-compatible endpoint and the command and the whole answer are saved
# as OUTDIR/NAME.txt, in the format of internal/glance/testdata/transcripts (which the replay and
# the live diff read). The original battery (01-91) was recorded from a real Glance with
# shared/reference/real-glance/capture-transcripts.sh; this one adds schema validation of every
# key of a POST body, HEAD errors, and deep nesting. Record from a real Glance:
#
#   hack/glance/start.sh 19393 && hack/glance/capture-transcripts.sh http://127.0.0.1:19393 OUTDIR
#   hack/glance/stop.sh 19393
#
# Nothing needs to answer on IMPORT_BASE: these tasks are only created, never awaited.
# Usage: hack/glance/capture-transcripts.sh BASE_URL OUTDIR [IMPORT_BASE]
set -euo pipefail
G=$1 OUT=$2 IMP=${3:-http://127.0.0.1:19293}
TOKEN=${TOKEN:-admin:admin:admin}
mkdir -p "$OUT"
J='Content-Type: application/json'
A=(-H "X-Auth-Token: $TOKEN")

# rec NAME CURL-ARGS...: the command as a shell line, a blank line, then curl -si's output.
rec() {
  local name=$1; shift
  {
    echo "### $(date -u +%FT%T.%3NZ)"
    printf '$ curl -si'
    for a in "$@"; do
      if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf ' %s' "$a"; else printf " '%s'" "${a//\'/\'\\\'\'}"; fi
    done
    echo; echo
    curl -si "$@"
    echo
  } >"$OUT/$name.txt"
}

INPUT="\"input\":{\"import_from\":\"$IMP/small.qcow2\",\"import_from_format\":\"qcow2\",\"image_properties\":{\"disk_format\":\"qcow2\",\"container_format\":\"bare\"}}"
post() { local name=$1 body=$2; shift 2; rec "$name" -X POST "$G/v2/tasks" -H "$J" "${A[@]}" "$@" -d "$body"; }

# --- every key of the body is validated against the task schema, then dropped ----------------
post 22b-post-unknown-toplevel-key "{\"type\":\"import\",\"foo\":1,$INPUT}"
post 22c-post-unknown-toplevel-key-accept-json "{\"type\":\"import\",\"foo\":1,$INPUT}" -H 'Accept: application/json'
post 22d-post-unknown-toplevel-key-accept-text "{\"type\":\"import\",\"foo\":1,$INPUT}" -H 'Accept: text/plain'
post 22e-post-unknown-key-long-values "{\"type\":\"import\",\"foo\":{\"b\":[1,2.5,null,true],\"a\":\"it's \\\"quoted\\\" and long enough to be split into several lines of the instance dump\"},\"input\":{\"import_from\":\"$IMP/small.qcow2\",\"import_from_format\":\"qcow2\",\"image_properties\":{\"disk_format\":\"qcow2\",\"container_format\":\"bare\",\"name\":\"ünïcödé name\"}}}"
UNICODE="{\"type\":\"import\",\"föö\":\"ünïcödé 🙂\",$INPUT}"
post 22v-post-unknown-key-unicode-accept-text "$UNICODE" -H 'Accept: text/plain'
post 22w-post-unknown-key-unicode-accept-json "$UNICODE" -H 'Accept: application/json'
post 22x-post-unknown-key-unicode "$UNICODE"
post 22f-post-status-bogus "{\"type\":\"import\",\"status\":\"bogus\",$INPUT}"
post 22g-post-status-bogus-accept-json "{\"type\":\"import\",\"status\":\"bogus\",$INPUT}" -H 'Accept: application/json'
post 22h-post-id-not-uuid "{\"type\":\"import\",\"id\":\"not-a-uuid\",$INPUT}"
post 22i-post-id-not-string "{\"type\":\"import\",\"id\":1,$INPUT}"
post 22j-post-owner-not-string "{\"type\":\"import\",\"owner\":1,$INPUT}"
post 22k-post-message-null "{\"type\":\"import\",\"message\":null,$INPUT}"
post 22l-post-result-not-object "{\"type\":\"import\",\"result\":\"done\",$INPUT}"
post 22m-post-created_at-not-string "{\"type\":\"import\",\"created_at\":1,$INPUT}"
post 22n-post-updated_at-null "{\"type\":\"import\",\"updated_at\":null,$INPUT}"
post 22o-post-expires_at-not-string "{\"type\":\"import\",\"expires_at\":true,$INPUT}"
post 22p-post-self-schema-not-string "{\"type\":\"import\",\"self\":[],\"schema\":{},$INPUT}"
post 22q-post-ids-not-string "{\"type\":\"import\",\"image_id\":1,\"request_id\":2,\"user_id\":3,$INPUT}"
# jsonschema's best match: a value of the wrong type beats an earlier one of the right type
post 22r-post-status-bogus-owner-not-string "{\"type\":\"import\",\"status\":\"bogus\",\"owner\":1,$INPUT}"
post 22s-post-id-not-uuid-type-bogus "{\"type\":\"bogus\",\"id\":\"x\",$INPUT}"
post 22t-post-unknown-key-beats-status "{\"type\":\"import\",\"status\":\"bogus\",\"foo\":1,$INPUT}"
# read-only keys of the right type are accepted and ignored
post 22u-post-readonly-keys-valid "{\"type\":\"import\",\"id\":\"00000000-0000-0000-0000-000000000000\",\"status\":\"success\",\"owner\":\"someone\",\"message\":\"m\",\"result\":null,\"expires_at\":null,\"created_at\":\"c\",\"updated_at\":\"u\",\"self\":\"s\",\"schema\":\"s\",\"image_id\":\"i\",\"request_id\":\"r\",\"user_id\":\"u\",$INPUT}"

# --- deep nesting: Python's json gives up with a RecursionError (500) from about 894 levels ----
DEEP800=$(printf '%.0s[' {1..800})$(printf '%.0s]' {1..800})
DEEP1001=$(printf '%.0s[' {1..1001})$(printf '%.0s]' {1..1001})
post 19b-post-nested-800-levels "$DEEP800"
post 19c-post-nested-1001-levels "$DEEP1001"

# --- HEAD: WebOb answers with an empty text/html error whatever Accept says ---------------------
rec 59b-head-tasks-accept-json -I "$G/v2/tasks" "${A[@]}" -H 'Accept: application/json'
rec 59c-head-tasks-accept-text -I "$G/v2/tasks" "${A[@]}" -H 'Accept: text/plain'
rec 59d-head-schema-accept-json -I "$G/v2/schemas/task" "${A[@]}" -H 'Accept: application/json'
rec 59e-head-unknown-path-accept-json -I "$G/v2/nothing" "${A[@]}" -H 'Accept: application/json'
rec 59f-head-tasks-no-token-accept-json -I "$G/v2/tasks" -H 'Accept: application/json'

ls "$OUT" | wc -l
