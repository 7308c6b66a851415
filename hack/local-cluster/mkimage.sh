#!/usr/bin/env bash
# Writes a docker-archive image tarball (importable with `ctr images import`) from a root
# filesystem directory: one layer, no registry, no Docker.
# Usage: mkimage.sh ROOTFS REF OUT.tar ENTRYPOINT [ARG...]
set -euo pipefail
rootfs=$1 ref=$2 out=$3; shift 3
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
diffid=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
entry=$(printf '"%s",' "$@"); entry=${entry%,}
cat > "$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Entrypoint":[$entry],"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"WorkingDir":"/","User":"65532:65532"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$diffid"]},
 "history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/local-cluster/mkimage.sh"}]}
JSON
cfg=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$cfg.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$cfg" "$ref" > "$work/manifest.json"
tar --owner=0 --group=0 --numeric-owner -C "$work" -cf "$out" manifest.json "$cfg.json" layer.tar
