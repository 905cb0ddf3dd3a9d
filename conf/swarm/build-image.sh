#!/usr/bin/env bash
# Build Agentainer's own image offline (`make swarm-images`), for the Swarm stack
# (conf/swarm/stack.yml):
#
#   agentainer/agentainer   the examples' base root filesystem (examples/rootfs.sh) + the
#                           agentainer package and its runtime dependencies in /opt/agentainer
#                           + the host's redis-server and its libraries
#                           + healthcheck.py (the stack's server healthcheck)
#
# It is tagged :latest and by its content hash (the label's first 12 digits), which the stack
# names: a rebuilt image is a changed service spec, and Swarm rolls the control plane onto it.
# Needs the project's venv (make venv) and redis-server (make deps).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
# shellcheck source=examples/rootfs.sh
source "$PROJECT/examples/rootfs.sh"

REPO=agentainer/agentainer
REDIS=/usr/bin/redis-server
SITE=/opt/agentainer
[[ -x $REDIS ]] || die "$REDIS is missing (apt-get install redis-server)"
[[ -x $PROJECT/.venv/bin/python ]] || die "the project's venv is missing (make venv)"

hash=$( { echo "$BASE_HASH"; cat "${BASH_SOURCE[0]}" "$HERE/healthcheck.py"; sha256sum "$REDIS";
          cd "$PROJECT" && git ls-files -z setup.py bin agentainer | xargs -0 cat; } | sha)
tag=$REPO:${hash:0:12}

if ! up_to_date "$REPO:latest" "$hash"; then
    make_rootfs
    # NOTE: pip runs on the image's interpreter (the venv's pip and setuptools on its path),
    # so the environment markers and the compiled wheels are those of the image's Python,
    # and the scripts' #! lines name it
    pip_path=$("$PROJECT/.venv/bin/python" -c \
        'import os, pip; print(os.path.dirname(os.path.dirname(pip.__file__)))')
    PYTHONPATH=$pip_path PIP_REQUIRE_VIRTUALENV=0 "$PYTHON" -m pip install -q --no-compile \
        --no-build-isolation --no-warn-script-location --target "$ROOTFS$SITE" "$PROJECT" \
        2>"$TMP/pip.log" || { cat "$TMP/pip.log" >&2; die "pip install failed"; }
    cp "$REDIS" "$ROOTFS/usr/bin/redis-server"
    install -D -m 755 "$HERE/healthcheck.py" "$ROOTFS/usr/local/bin/agentainer-healthcheck"
    copy_libs "$REDIS" $(find "$ROOTFS$SITE" -name '*.so')
    # NOTE: compiled here, once: without bytecode every new task spends ~2.5 s of CPU
    # compiling its imports (0.7 s with it), for +25 MB; the recorded paths are the image's
    "$PYTHON" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$ROOTFS" -p / \
        "$ROOTFS$SITE" "$ROOTFS$PYLIB" >/dev/null
    mkdir -p "$ROOTFS/data"
    import_image "$REPO:latest" "$hash" "ENV PYTHONPATH=$SITE" 'ENV AGENTAINER_DATA_DIR=/data' \
        "ENV PATH=$SITE/bin:$PATH_ENV" 'CMD ["agentainer-server"]'
fi
docker tag "$REPO:latest" "$tag"
# NOTE: older hash tags go once no container (a task's, even an ended one) uses them
for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPO"); do
    [[ $old == "$REPO:latest" || $old == "$tag" ]] \
        || docker image rm "$old" >/dev/null 2>&1 || true
done
