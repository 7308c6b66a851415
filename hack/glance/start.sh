#!/usr/bin/env bash
# Starts a real OpenStack Glance (Debian's glance-api, Zed) on 127.0.0.1:PORT from a fresh
# state, for the compatibility diff and the benchmark: sqlite, file store, the taskflow
# executor, and in front a stand-in for keystonemiddleware that turns the token
# USER:PROJECT:ROLE into identity headers (any other token is admin:admin:admin).
# Installs glance-api when it is missing. Prints GLANCE_URL=... when it answers.
# Interoperable image import is enabled with GLANCE_IMPORT_METHODS (default web-download, the one
# method the shim enables, so that the live diff compares like with like; set it to
# glance-direct,web-download,copy-image for Glance's full set, or to "" to disable import).
#
# Usage: hack/glance/start.sh [PORT] [STATE_DIR]
set -euo pipefail
PORT=${1:-19292}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${2:-$ROOT/bin/real-glance/run-$PORT}

if ! command -v glance-api >/dev/null || ! command -v curl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends glance-api curl >/dev/null
fi
"$(dirname "$0")/stop.sh" "$PORT" "$DIR" >/dev/null
rm -rf "$DIR"
mkdir -p "$DIR"/{images,work,lock,image-cache,pylib,staging}
IMPORT_METHODS=${GLANCE_IMPORT_METHODS-web-download}
IMPORT_CONF=""
[[ -n $IMPORT_METHODS ]] && IMPORT_CONF="enabled_import_methods = [$IMPORT_METHODS]
node_staging_uri = file://$DIR/staging"

cat >"$DIR/glance-api.conf" <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $PORT
workers = 0
use_stderr = false
log_file = $DIR/glance-api.log
image_cache_dir = $DIR/image-cache
enforce_secure_rbac = false
$IMPORT_CONF
[database]
connection = sqlite:///$DIR/glance.sqlite
[glance_store]
stores = file,http
default_store = file
filesystem_store_datadir = $DIR/images/
[task]
task_executor = taskflow
work_dir = $DIR/work
[import_filtering_opts]
allowed_schemes = [http,https]
allowed_hosts = [127.0.0.1,localhost]
allowed_ports = []
[paste_deploy]
flavor = fakeauth
config_file = $DIR/glance-api-paste.ini
[oslo_policy]
policy_file = $DIR/policy.yaml
enforce_new_defaults = false
enforce_scope = false
[oslo_concurrency]
lock_path = $DIR/lock
CONF
echo '{}' >"$DIR/policy.yaml"
sed "s#/etc/glance/healthcheck_disable#$DIR/healthcheck_disable#" /etc/glance/glance-api-paste.ini >"$DIR/glance-api-paste.ini"
cat >>"$DIR/glance-api-paste.ini" <<'PASTE'

[pipeline:glance-api-fakeauth]
pipeline = cors healthcheck http_proxy_to_wsgi versionnegotiation osprofiler fakekeystone context rootapp

[filter:fakekeystone]
paste.filter_factory = fake_keystone:filter_factory
PASTE
cat >"$DIR/pylib/fake_keystone.py" <<'PY'
"""Stands in for keystonemiddleware: the token USER:PROJECT:ROLE[,ROLE] becomes the
identity headers Glance's ContextMiddleware reads; any other token is admin:admin:admin;
no token passes through (Glance answers 401). Client-sent identity headers are dropped."""
import urllib.parse

STRIP = ('IDENTITY_STATUS', 'PROJECT_ID', 'PROJECT_NAME', 'USER_ID', 'USER_NAME', 'ROLES',
         'TENANT_ID', 'TENANT_NAME', 'TENANT', 'USER', 'ROLE', 'SERVICE_CATALOG')


def filter_factory(global_conf, **local_conf):
    def middleware(app):
        def call(environ, start_response):
            for k in STRIP:
                environ.pop('HTTP_X_' + k, None)
            tok = environ.get('HTTP_X_AUTH_TOKEN')
            if tok:
                parts = urllib.parse.unquote(tok).split(':')
                user, project, roles = parts if len(parts) == 3 and all(parts) else ('admin', 'admin', 'admin')
                environ.update({'HTTP_X_IDENTITY_STATUS': 'Confirmed', 'HTTP_X_USER_ID': user,
                                'HTTP_X_PROJECT_ID': project, 'HTTP_X_ROLES': roles})
            return app(environ, start_response)
        return call
    return middleware
PY
[[ -f /etc/glance/schema-image.json ]] && cp /etc/glance/schema-image.json "$DIR/"

glance-manage --config-file "$DIR/glance-api.conf" db_sync >"$DIR/db_sync.log" 2>&1
cd "$DIR"
PYTHONPATH="$DIR/pylib" setsid glance-api --config-file "$DIR/glance-api.conf" >"$DIR/glance-api.stdout" 2>&1 </dev/null &
echo $! >"$DIR/glance-api.pid"
for _ in $(seq 600); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthcheck") == 200 ]] && { echo "GLANCE_URL=http://127.0.0.1:$PORT"; exit 0; }
  kill -0 "$(cat "$DIR/glance-api.pid")" 2>/dev/null || break
  sleep 0.1
done
echo "glance-api did not start: see $DIR/glance-api.log" >&2
tail -20 "$DIR/glance-api.stdout" >&2
exit 1
