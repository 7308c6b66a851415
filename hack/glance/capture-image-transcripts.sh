#!/usr/bin/env bash
# Records the images API battery (transcripts 1xx) the shim is held to, in the format of
# internal/glance/testdata/transcripts: each request is sent with `curl -si` and the command and
# the whole answer are saved as OUTDIR/NAME.txt. The battery is a sequence: images are created
# with fixed ids, changed, listed, imported into and deleted, so the replay test
# (TestReplayRealGlanceImageTranscripts) sends it, in name order, to a shim with no images.
# Record it from a real Glance with web-download enabled (hack/glance/start.sh's default):
#
#   hack/glance/start.sh 19393 && hack/glance/capture-image-transcripts.sh http://127.0.0.1:19393 OUTDIR
#   hack/glance/stop.sh 19393
#
# Nothing needs to answer on IMPORT_BASE: the only import that passes is the last step of its image.
# Usage: hack/glance/capture-image-transcripts.sh BASE_URL OUTDIR [IMPORT_BASE]
set -euo pipefail
G=$1 OUT=$2 IMP=${3:-http://127.0.0.1:19293}
mkdir -p "$OUT"
J='Content-Type: application/json'
P='Content-Type: application/openstack-images-v2.1-json-patch'
A=(-H "X-Auth-Token: admin:admin:admin")
M=(-H "X-Auth-Token: member:other:member")
I1=10000000-0000-4000-8000-000000000001
I2=10000000-0000-4000-8000-000000000002
I3=10000000-0000-4000-8000-000000000003
I4=10000000-0000-4000-8000-000000000004
I5=10000000-0000-4000-8000-000000000005
NONE=10000000-0000-4000-8000-0000000000ff

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
post() { local name=$1 body=$2; shift 2; rec "$name" -X POST "$G/v2/images" -H "$J" "${A[@]}" "$@" -d "$body"; }
patch() { local name=$1 id=$2 body=$3; shift 3; rec "$name" -X PATCH "$G/v2/images/$id" -H "$P" "${A[@]}" "$@" -d "$body"; }
import() { local name=$1 id=$2 body=$3; shift 3; rec "$name" -X POST "$G/v2/images/$id/import" -H "$J" "${A[@]}" "$@" -d "$body"; }
get() { local name=$1 path=$2; shift 2; rec "$name" "$G$path" "${A[@]}" "$@"; }

# --- create ------------------------------------------------------------------------------------
post 100-post-image "{\"id\":\"$I1\",\"name\":\"cirros\",\"disk_format\":\"qcow2\",\"container_format\":\"bare\",\"tags\":[\"b\",\"a\"],\"os_distro\":\"cirros\",\"hw_qemu_guest_agent\":\"yes\",\"min_disk\":1,\"min_ram\":64}"
post 100b-post-image-duplicate-id "{\"id\":\"$I1\",\"name\":\"again\"}"
post 100c-post-image-minimal "{\"id\":\"$I2\",\"name\":\"ünïcödé\",\"visibility\":\"private\"}"
post 100d-post-image-no-format "{\"id\":\"$I3\",\"name\":\"zeta\",\"protected\":true,\"z_prop\":\"1\",\"a_prop\":\"2\"}"
post 101-post-image-bad-disk-format '{"name":"x","disk_format":"qcow3"}'
post 101b-post-image-extra-not-string '{"name":"x","foo":1}'
post 101c-post-image-name-too-long "{\"name\":\"$(printf 'n%.0s' {1..256})\"}"
post 101d-post-image-min-disk-string '{"name":"x","min_disk":"1"}'
post 101e-post-image-bad-visibility '{"name":"x","visibility":"everyone"}'
post 101f-post-image-tags-not-list '{"name":"x","tags":"a"}'
post 101g-post-image-id-not-uuid '{"id":"nope"}'
post 101h-post-image-protected-string '{"protected":"yes"}'
post 102-post-image-readonly-status '{"name":"x","status":"active"}'
post 102b-post-image-disallowed-self '{"name":"x","self":"/here"}'
post 102c-post-image-reserved-location '{"name":"x","location":"http://x"}'
post 102d-post-image-reserved-namespace '{"name":"x","os_glance_x":"y"}'
post 102e-post-image-readonly-size '{"name":"x","size":1}'
post 103-post-image-not-json 'nope'
post 103b-post-image-list '[]'
rec 103c-post-image-no-body -X POST "$G/v2/images" -H "$J" "${A[@]}"
post 103d-post-image-owner-other '{"name":"x","owner":"someone"}' -H 'Accept: application/json'

# --- read ----------------------------------------------------------------------------------------
get 104-get-image "/v2/images/$I1"
get 104b-get-image-nonexistent "/v2/images/$NONE"
get 104c-get-image-not-uuid "/v2/images/nope"
get 104d-get-image-accept-json "/v2/images/$NONE" -H 'Accept: application/json'
rec 104e-get-image-member-other-project "$G/v2/images/$I2" "${M[@]}"
rec 104f-head-image -I "$G/v2/images/$I1" "${A[@]}"
rec 104g-put-image -X PUT "$G/v2/images/$I1" "${A[@]}" -H "$J" -d '{}'
get 104h-get-image-file-no-data "/v2/images/$I1/file"
get 104i-get-image-tasks-none "/v2/images/$I1/tasks"
get 104j-get-image-tasks-nonexistent "/v2/images/$NONE/tasks"
get 104k-get-image-file-nonexistent "/v2/images/$NONE/file"
get 104l-get-info-import "/v2/info/import"
get 104m-get-schema-image "/v2/schemas/image"
get 104n-get-schema-images "/v2/schemas/images"

# --- update --------------------------------------------------------------------------------------
patch 105-patch-image "$I1" '[{"op":"replace","path":"/name","value":"cirros-2"},{"op":"add","path":"/tags","value":["c","a"]},{"op":"add","path":"/description","value":"d"},{"op":"replace","path":"/os_distro","value":"ubuntu"},{"op":"remove","path":"/hw_qemu_guest_agent"},{"op":"replace","path":"/min_ram","value":128},{"op":"replace","path":"/visibility","value":"public"}]'
patch 105b-patch-image-readd-removed "$I1" '[{"op":"add","path":"/hw_qemu_guest_agent","value":"no"}]'
patch 105c-patch-image-remove-missing "$I1" '[{"op":"remove","path":"/nothing"}]'
patch 105d-patch-image-replace-missing "$I1" '[{"op":"replace","path":"/nothing","value":"x"}]'
patch 105e-patch-image-status "$I1" '[{"op":"replace","path":"/status","value":"active"}]'
patch 105f-patch-image-not-list "$I1" '{"op":"replace","path":"/name","value":"x"}'
patch 105g-patch-image-bad-visibility "$I1" '[{"op":"replace","path":"/visibility","value":"everyone"}]'
patch 105h-patch-image-no-op "$I1" '[{"path":"/name","value":"x"}]'
patch 105i-patch-image-bad-op "$I1" '[{"op":"move","path":"/name","value":"x"}]'
patch 105j-patch-image-no-value "$I1" '[{"op":"replace","path":"/name"}]'
patch 105k-patch-image-bad-pointer "$I1" '[{"op":"replace","path":"name","value":"x"}]'
patch 105l-patch-image-deep-path "$I1" '[{"op":"replace","path":"/name/x","value":"x"}]'
patch 105m-patch-image-remove-base "$I1" '[{"op":"remove","path":"/name"}]'
patch 105n-patch-image-property-not-string "$I1" '[{"op":"add","path":"/foo","value":1}]'
patch 105o-patch-image-nonexistent "$NONE" '[{"op":"replace","path":"/name","value":"x"}]'
rec 105p-patch-image-json-content-type -X PATCH "$G/v2/images/$I1" -H "$J" "${A[@]}" -d '[]'
patch 105q-patch-image-empty "$I1" '[]'
patch 105r-patch-image-protected "$I2" '[{"op":"replace","path":"/protected","value":true},{"op":"replace","path":"/tags","value":["x"]}]'
rec 105s-patch-image-member-other-project -X PATCH "$G/v2/images/$I1" -H "$P" "${M[@]}" -d '[{"op":"replace","path":"/name","value":"x"}]'
patch 105t-patch-image-tags-not-list "$I1" '[{"op":"replace","path":"/tags","value":"x"}]'
patch 105u-patch-image-min-disk-negative "$I1" '[{"op":"replace","path":"/min_disk","value":-1}]'
patch 105v-patch-image-owner "$I1" '[{"op":"replace","path":"/owner","value":"admin"}]'
patch 105w-patch-image-add-existing-base "$I1" '[{"op":"add","path":"/name","value":"cirros-3"}]'

# --- list ----------------------------------------------------------------------------------------
get 106-list-images "/v2/images"
get 106b-list-images-limit-1 "/v2/images?limit=1"
get 106c-list-images-marker "/v2/images?limit=1&marker=$I3"
get 106d-list-images-sort-name-asc "/v2/images?sort_key=name&sort_dir=asc"
get 106e-list-images-sort-new-syntax "/v2/images?sort=name:asc,created_at"
get 106f-list-images-name "/v2/images?name=cirros-2"
get 106g-list-images-tag "/v2/images?tag=a&tag=c"
get 106h-list-images-visibility-private "/v2/images?visibility=private"
get 106i-list-images-visibility-bad "/v2/images?visibility=everyone"
get 106j-list-images-status "/v2/images?status=queued&limit=2"
get 106k-list-images-protected "/v2/images?protected=true"
get 106l-list-images-protected-bad "/v2/images?protected=maybe"
get 106m-list-images-os-hidden-bad "/v2/images?os_hidden=maybe"
get 106n-list-images-sort-key-bad "/v2/images?sort_key=nope"
get 106o-list-images-sort-dir-bad "/v2/images?sort_dir=up"
get 106p-list-images-limit-bad "/v2/images?limit=x"
get 106q-list-images-marker-missing "/v2/images?marker=$NONE"
get 106r-list-images-disk-format "/v2/images?disk_format=qcow2"
get 106s-list-images-owner "/v2/images?owner=admin&sort_key=name&sort_dir=asc"
get 106t-list-images-mixed-sort-syntax "/v2/images?sort=name&sort_key=name"
get 106u-list-images-member-status-bad "/v2/images?member_status=maybe"
get 106v-list-images-changes-since "/v2/images?changes-since=2020-01-01"
get 106w-list-images-limit-negative "/v2/images?limit=-1"
rec 106x-list-images-member-other-project "$G/v2/images" "${M[@]}"
get 106y-list-images-property "/v2/images?os_distro=ubuntu"
get 106z-list-images-sort-dirs-mismatch "/v2/images?sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc"

# --- import --------------------------------------------------------------------------------------
import 107-import-glance-direct "$I1" '{"method":{"name":"glance-direct"}}'
import 107b-import-copy-image "$I1" '{"method":{"name":"copy-image"}}'
import 107c-import-no-method "$I1" '{}'
import 107d-import-no-name "$I1" '{"method":{}}'
import 107e-import-no-disk-format "$I3" "{\"method\":{\"name\":\"web-download\",\"uri\":\"$IMP/small.qcow2\"}}"
import 107f-import-file-uri "$I1" '{"method":{"name":"web-download","uri":"file:///etc/passwd"}}'
import 107g-import-nonexistent "$NONE" "{\"method\":{\"name\":\"web-download\",\"uri\":\"$IMP/small.qcow2\"}}"
import 107h-import-blocked-host "$I1" '{"method":{"name":"web-download","uri":"http://10.0.0.1/x.qcow2"}}'
import 107i-import-all-stores-not-bool "$I1" '{"method":{"name":"web-download","uri":"http://127.0.0.1/x"},"all_stores":"yes"}'
import 107j-import-no-uri "$I1" '{"method":{"name":"web-download"}}'
rec 107k-import-member-other-project -X POST "$G/v2/images/$I1/import" -H "$J" "${M[@]}" -d "{\"method\":{\"name\":\"web-download\",\"uri\":\"$IMP/small.qcow2\"}}"
rec 107l-get-import-route -X GET "$G/v2/images/$I1/import" "${A[@]}"
import 107m-import-bad-json "$I1" 'nope'

# --- a member's publicize_image and owner ---------------------------------------------------------
rec 107n-post-image-member-public -X POST "$G/v2/images" -H "$J" "${M[@]}" -d '{"name":"pub","visibility":"public"}'
rec 107o-post-image-member -X POST "$G/v2/images" -H "$J" "${M[@]}" -d "{\"id\":\"$I5\",\"name\":\"members\"}"
rec 107p-patch-image-member-publicize-replace -X PATCH "$G/v2/images/$I5" -H "$P" "${M[@]}" -d '[{"op":"replace","path":"/visibility","value":"public"}]'
rec 107q-patch-image-member-publicize-add -X PATCH "$G/v2/images/$I5" -H "$P" "${M[@]}" -d '[{"op":"add","path":"/visibility","value":"public"}]'
rec 107r-patch-image-member-add-owner-other -X PATCH "$G/v2/images/$I5" -H "$P" "${M[@]}" -d '[{"op":"add","path":"/owner","value":"someone-else"}]'
rec 107s-patch-image-member-add-owner-own -X PATCH "$G/v2/images/$I5" -H "$P" "${M[@]}" -d '[{"op":"add","path":"/owner","value":"other"}]'
rec 107t-patch-image-member-replace-owner -X PATCH "$G/v2/images/$I5" -H "$P" "${M[@]}" -d '[{"op":"replace","path":"/owner","value":"other"}]'
rec 107u-delete-image-member -X DELETE "$G/v2/images/$I5" "${M[@]}"

# --- delete --------------------------------------------------------------------------------------
rec 108-delete-image-protected -X DELETE "$G/v2/images/$I2" "${A[@]}"
patch 108b-patch-image-unprotect "$I2" '[{"op":"replace","path":"/protected","value":false}]'
rec 108c-delete-image -X DELETE "$G/v2/images/$I2" "${A[@]}"
get 108d-get-image-after-delete "/v2/images/$I2"
rec 108e-delete-image-again -X DELETE "$G/v2/images/$I2" "${A[@]}"
rec 108f-delete-image-member-other-project -X DELETE "$G/v2/images/$I1" "${M[@]}"
rec 108g-delete-image-not-uuid -X DELETE "$G/v2/images/nope" "${A[@]}"
patch 108h-patch-image-unprotect-3 "$I3" '[{"op":"replace","path":"/protected","value":false}]'
rec 108i-delete-image-3 -X DELETE "$G/v2/images/$I3" "${A[@]}"
# the last step of I1: an import the recorded Glance accepts (the shim creates its task)
post 109-post-image-for-import "{\"id\":\"$I4\",\"name\":\"web\",\"disk_format\":\"raw\",\"container_format\":\"bare\"}"
import 109b-import-web-download "$I4" "{\"method\":{\"name\":\"web-download\",\"uri\":\"$IMP/small.qcow2\"}}"
rec 109c-delete-image-1 -X DELETE "$G/v2/images/$I1" "${A[@]}"

ls "$OUT" | wc -l
