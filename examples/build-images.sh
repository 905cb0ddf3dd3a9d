#!/usr/bin/env bash
# Build the example images offline with `docker import` (no registry needed):
#
#   agentainer/python-base     the host's python3 (Debian/Ubuntu) + busybox, minimal rootfs
#   agentainer/echo-agent      base + examples/echo-agent/app.py
#   agentainer/stateful-agent  base + examples/stateful-agent/app.py
#   agentainer/stream-agent    base + examples/stream-agent/app.py
#
# With the argument `agentainer` it builds Agentainer's own image instead (for the Swarm
# stack, conf/swarm/stack.yml; `make swarm-images`):
#
#   agentainer/agentainer      base + the agentainer package and its runtime dependencies
#                              (pip install --target, by the project's venv) + the host's
#                              redis-server and its libraries
#
# Each image carries the label agentainer.example.hash, a sha256 of its inputs;
# an image whose label already matches is left alone, so re-runs are cheap.
# Needs root, docker, /usr/bin/python3 (3.11 or newer) and /bin/busybox (busybox-static).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
[[ -x /usr/bin/python3 ]] || { echo "build-images: /usr/bin/python3 is missing (apt-get install python3)" >&2; exit 1; }
PYVER=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYTHON=/usr/bin/python$PYVER
PYLIB=/usr/lib/python$PYVER
BUSYBOX=/bin/busybox
MOZILLA_CAS=/usr/share/ca-certificates/mozilla
LABEL=agentainer.example.hash
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Stdlib parts not needed at runtime, and C extensions whose libraries we skip.
EXCLUDES=(
    test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data __pycache__
    "config-$PYVER-*" sitecustomize.py
    'lib-dynload/_test*' 'lib-dynload/_ctypes_test*' 'lib-dynload/xxlimited*'
    'lib-dynload/_xxtestfuzz*' 'lib-dynload/_curses*' 'lib-dynload/readline*'
    'lib-dynload/_dbm*' 'lib-dynload/nis*'
)

die() { echo "build-images: $*" >&2; exit 1; }

[[ -x $PYTHON ]] || die "$PYTHON is missing (apt-get install python3)"
[[ -x $BUSYBOX ]] || die "$BUSYBOX is missing (apt-get install busybox-static)"
command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ROOTFS=$TMP/rootfs

sha() { sha256sum | cut -d' ' -f1; }

# Print every shared object (incl. the loader) that the given ELF files need.
shared_libs() {
    local f
    for f in "$@"; do
        ldd "$f" 2>/dev/null || true
    done | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u
}

# Assemble the minimal root filesystem in $ROOTFS.
make_rootfs() {
    local excludes=() pattern lib applet
    mkdir -p "$ROOTFS"/{bin,dev,etc,proc,root,sys,tmp,usr/bin,usr/lib/ssl,var/tmp,app/data}
    chmod 1777 "$ROOTFS/tmp" "$ROOTFS/var/tmp"

    cp "$PYTHON" "$ROOTFS/usr/bin/python$PYVER"
    ln -s "python$PYVER" "$ROOTFS/usr/bin/python3"
    ln -s python3 "$ROOTFS/usr/bin/python"
    for pattern in "${EXCLUDES[@]}"; do excludes+=(--exclude="$pattern"); done
    tar -C "$(dirname "$PYLIB")" "${excludes[@]}" -cf - "$(basename "$PYLIB")" | tar -C "$ROOTFS/usr/lib" -xf -

    cp "$BUSYBOX" "$ROOTFS/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [[ -e $ROOTFS/bin/$applet ]] || ln -s busybox "$ROOTFS/bin/$applet"
    done

    for lib in $(shared_libs "$PYTHON" "$BUSYBOX" "$ROOTFS$PYLIB"/lib-dynload/*.so); do
        mkdir -p "$ROOTFS$(dirname "$lib")"
        cp -L "$lib" "$ROOTFS$lib"
    done

    if [[ -d $MOZILLA_CAS ]]; then  # public roots only, never the host's local CAs
        mkdir -p "$ROOTFS/etc/ssl/certs"
        cat "$MOZILLA_CAS"/*.crt > "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
        ln -s /etc/ssl/certs/ca-certificates.crt "$ROOTFS/usr/lib/ssl/cert.pem"
        ln -s /etc/ssl/certs "$ROOTFS/usr/lib/ssl/certs"
    fi

    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ROOTFS/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$ROOTFS/etc/nsswitch.conf"
}

# import_image TAG HASH [CHANGE...]: tar $ROOTFS into TAG, dropping the image it replaces.
import_image() {
    local tag=$1 hash=$2 old c
    shift 2
    local changes=(--change "ENV PATH=$PATH_ENV" --change 'ENV PYTHONUNBUFFERED=1'
                   --change 'WORKDIR /app' --change "LABEL $LABEL=$hash")
    for c in "$@"; do changes+=(--change "$c"); done
    old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    tar --numeric-owner --owner=0 --group=0 -C "$ROOTFS" -cf - . \
        | docker import "${changes[@]}" --message "built by examples/build-images.sh" - "$tag" >/dev/null
    [[ -z $old ]] || docker image rm "$old" >/dev/null 2>&1 || true
}

# build TAG HASH APP [CHANGE...]: (re)build TAG unless its label already equals HASH.
build() {
    local tag=$1 hash=$2 app=$3
    shift 3
    if [[ $(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$tag" 2>/dev/null) == "$hash" ]]; then
        echo "$tag: up to date"
        return
    fi
    [[ -d $ROOTFS ]] || make_rootfs
    rm -f "$ROOTFS/app/app.py"
    [[ -z $app ]] || cp "$app" "$ROOTFS/app/app.py"
    import_image "$tag" "$hash" "$@"
    echo "$tag: built"
}

BASE_HASH=$( { cat "$SELF"; "$PYTHON" -VV; sha256sum "$PYTHON" "$BUSYBOX";
               cat "$MOZILLA_CAS"/*.crt 2>/dev/null || true; } | sha)

# build_agentainer: Agentainer's own image, from the checkout one folder up.
build_agentainer() {
    local project=$HERE/.. redis=/usr/bin/redis-server hash site lib
    [[ -x $redis ]] || die "$redis is missing (apt-get install redis-server)"
    [[ -x $project/.venv/bin/pip ]] || die "the project's venv is missing (make venv)"
    hash=$( { echo "$BASE_HASH"; sha256sum "$redis";
              cd "$project" && git ls-files -z setup.py agentainer | xargs -0 cat; } | sha)
    # NOTE: also tagged by its hash, which the stack names (make swarm-up), so a rebuilt
    # image is a changed service spec and Swarm rolls the control plane onto it
    if [[ $(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" \
            agentainer/agentainer:latest 2>/dev/null) == "$hash" ]]; then
        docker tag agentainer/agentainer:latest "agentainer/agentainer:${hash:0:12}"
        echo "agentainer/agentainer:latest: up to date"
        return
    fi
    make_rootfs
    site=$ROOTFS/opt/agentainer
    # NOTE: pip reads the markers with the venv's Python; redis-py needs async-timeout
    # below 3.11.3, which the image's (Debian's /usr/bin/python3) may be
    "$project/.venv/bin/pip" install -q --no-compile --target "$site" "$project" \
        async-timeout 2>"$TMP/pip.log" || { cat "$TMP/pip.log" >&2; die "pip install failed"; }
    sed -i '1s|^#!.*python.*$|#!/usr/bin/python3|' "$site"/bin/*  # NOTE: pip wrote the venv's
    cp "$redis" "$ROOTFS/usr/bin/redis-server"
    for lib in $(shared_libs "$redis" $(find "$site" -name '*.so')); do
        mkdir -p "$ROOTFS$(dirname "$lib")"
        cp -L "$lib" "$ROOTFS$lib"
    done
    mkdir -p "$ROOTFS/data"
    import_image agentainer/agentainer:latest "$hash" 'ENV PYTHONPATH=/opt/agentainer' \
        'ENV AGENTAINER_DATA_DIR=/data' "ENV PATH=/opt/agentainer/bin:$PATH_ENV" 'CMD ["agentainer-server"]'
    docker tag agentainer/agentainer:latest "agentainer/agentainer:${hash:0:12}"
    echo "agentainer/agentainer:latest: built"
}

if [[ ${1:-} == agentainer ]]; then
    build_agentainer
    exit 0
fi

build agentainer/python-base:latest "$BASE_HASH" "" 'CMD ["python3"]'
for name in echo-agent stateful-agent stream-agent; do
    app="$HERE/$name/app.py"
    build "agentainer/$name:latest" "$( { echo "$BASE_HASH"; cat "$app"; } | sha)" "$app" \
        'EXPOSE 8000' 'CMD ["python3","/app/app.py"]'
done
