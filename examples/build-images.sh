#!/usr/bin/env bash
# Build the example images offline with `docker import` (no registry needed):
#
#   agentainer/python-base     the host's python3 (Debian/Ubuntu) + busybox, minimal rootfs
#   agentainer/echo-agent      base + examples/echo-agent/app.py
#   agentainer/stateful-agent  base + examples/stateful-agent/app.py
#   agentainer/stream-agent    base + examples/stream-agent/app.py
#
# The root filesystem, the hash labels and the import are rootfs.sh's (shared with
# conf/swarm/build-image.sh, Agentainer's own image): an image whose label already matches
# its inputs is left alone, so re-runs are cheap.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=examples/rootfs.sh
source "$HERE/rootfs.sh"

# build TAG HASH APP [CHANGE...]: (re)build TAG with APP at /app/app.py, unless up to date.
build() {
    local tag=$1 hash=$2 app=$3
    shift 3
    up_to_date "$tag" "$hash" && return
    [[ -d $ROOTFS ]] || make_rootfs
    rm -f "$ROOTFS/app/app.py"
    [[ -z $app ]] || cp "$app" "$ROOTFS/app/app.py"
    import_image "$tag" "$hash" "$@"
}

build agentainer/python-base:latest "$BASE_HASH" "" 'CMD ["python3"]'
for name in echo-agent stateful-agent stream-agent; do
    app="$HERE/$name/app.py"
    build "agentainer/$name:latest" "$( { echo "$BASE_HASH"; cat "$app"; } | sha)" "$app" \
        'EXPOSE 8000' 'CMD ["python3","/app/app.py"]'
done
