# What every offline image build shares (sourced, not run): examples/build-images.sh (the
# example agents) and conf/swarm/build-image.sh (Agentainer's own image) put a minimal root
# filesystem together from the host's /usr/bin/python3, its stdlib and busybox, and load it
# with `docker import` (no registry needed).
#
# Each image carries the label agentainer.example.hash, a sha256 of its inputs; a script
# leaves an image whose label already matches alone (up_to_date), so re-runs are cheap.
# Needs root (or the docker group), docker, /usr/bin/python3 (3.11 or newer) and
# /bin/busybox (busybox-static).
# shellcheck shell=bash

PROG=$(basename "$0" .sh)
PYVER=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
    || { echo "$PROG: /usr/bin/python3 is missing (apt-get install python3)" >&2; exit 1; }
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

die() { echo "$PROG: $*" >&2; exit 1; }

[[ -x $PYTHON ]] || die "$PYTHON is missing (apt-get install python3)"
[[ -x $BUSYBOX ]] || die "$BUSYBOX is missing (apt-get install busybox-static)"
command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ROOTFS=$TMP/rootfs

sha() { sha256sum | cut -d' ' -f1; }

# The base root filesystem's inputs: this file, the interpreter, busybox, the CA roots.
BASE_HASH=$( { cat "${BASH_SOURCE[0]}"; "$PYTHON" -VV; sha256sum "$PYTHON" "$BUSYBOX";
               cat "$MOZILLA_CAS"/*.crt 2>/dev/null || true; } | sha)

# copy_libs ELF...: copy every shared object (incl. the loader) the files need into $ROOTFS.
copy_libs() {
    local f lib
    for lib in $(for f in "$@"; do ldd "$f" 2>/dev/null || true; done \
                 | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' \
                 | sort -u); do
        mkdir -p "$ROOTFS$(dirname "$lib")"
        cp -L "$lib" "$ROOTFS$lib"
    done
}

# Assemble the minimal root filesystem in $ROOTFS.
make_rootfs() {
    local excludes=() pattern applet
    mkdir -p "$ROOTFS"/{bin,dev,etc,proc,root,sys,tmp,usr/bin,usr/lib/ssl,var/tmp,app/data}
    chmod 1777 "$ROOTFS/tmp" "$ROOTFS/var/tmp"

    cp "$PYTHON" "$ROOTFS/usr/bin/python$PYVER"
    ln -s "python$PYVER" "$ROOTFS/usr/bin/python3"
    ln -s python3 "$ROOTFS/usr/bin/python"
    for pattern in "${EXCLUDES[@]}"; do excludes+=(--exclude="$pattern"); done
    tar -C "$(dirname "$PYLIB")" "${excludes[@]}" -cf - "$(basename "$PYLIB")" \
        | tar -C "$ROOTFS/usr/lib" -xf -

    cp "$BUSYBOX" "$ROOTFS/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [[ -e $ROOTFS/bin/$applet ]] || ln -s busybox "$ROOTFS/bin/$applet"
    done

    copy_libs "$PYTHON" "$BUSYBOX" "$ROOTFS$PYLIB"/lib-dynload/*.so

    if [[ -d $MOZILLA_CAS ]]; then  # public roots only, never the host's local CAs
        mkdir -p "$ROOTFS/etc/ssl/certs"
        cat "$MOZILLA_CAS"/*.crt > "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
        ln -s /etc/ssl/certs/ca-certificates.crt "$ROOTFS/usr/lib/ssl/cert.pem"
        ln -s /etc/ssl/certs "$ROOTFS/usr/lib/ssl/certs"
    fi

    printf '%s\n' root:x:0:0:root:/root:/bin/sh \
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false > "$ROOTFS/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$ROOTFS/etc/nsswitch.conf"
}

# up_to_date TAG HASH: true (and says so) when TAG's label already equals HASH.
up_to_date() {
    [[ $(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null) \
       == "$2" ]] || return 1
    echo "$1: up to date"
}

# import_image TAG HASH [CHANGE...]: tar $ROOTFS into TAG, dropping the image it replaces
# unless a container still uses it (or another tag names it).
import_image() {
    local tag=$1 hash=$2 old c
    shift 2
    local changes=(--change "ENV PATH=$PATH_ENV" --change 'ENV PYTHONUNBUFFERED=1'
                   --change 'WORKDIR /app' --change "LABEL $LABEL=$hash")
    for c in "$@"; do changes+=(--change "$c"); done
    old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    tar --numeric-owner --owner=0 --group=0 -C "$ROOTFS" -cf - . \
        | docker import "${changes[@]}" --message "built by $PROG" - "$tag" >/dev/null
    [[ -z $old ]] || docker image rm "$old" >/dev/null 2>&1 || true
    echo "$tag: built"
}
