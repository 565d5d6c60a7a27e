#!/usr/bin/env bash
# docker/test-build.sh: build the vlmctl images for real and run vlmctl inside each.
#
# Slow (20-40 minutes, about 30 GB of free disk) and NOT part of the default pytest run. Run it as
# root from anywhere:   bash docker/test-build.sh
#
# It works on a machine with no Docker engine and no access to a container registry:
#   1. installs podman and debootstrap with apt-get when they are missing;
#   2. builds a Debian bookworm base with `debootstrap --variant=minbase` from the Debian mirror
#      that apt already uses, slims it the way the official debian:bookworm-slim is (no apt lists
#      or caches, no docs, man pages or translations, and dpkg told to skip them) and imports it
#      as localhost/debian:bookworm-slim (reused when present: delete it with
#      `podman rmi localhost/debian:bookworm-slim` to rebuild);
#   3. builds docker/Dockerfile.cpu and docker/Dockerfile UNCHANGED, only swapping the base images
#      for that local Debian through their build args (BASE_IMAGE, BUILDER_IMAGE) and setting
#      PYTHON_VERSION=3.11 (bookworm's apt python). Both Dockerfiles install python from apt when
#      the base lacks it, which is the path the real CUDA image always takes (nvidia/cuda images
#      have no python), so the test exercises the real install steps rather than a test-only
#      "python base" image;
#   4. gives pip the local wheel folders and file:// indexes that `pip config list` names (mounted
#      read-only at the same paths) plus the host CA bundle, so torch comes from this disk, not the
#      network. TORCH_INDEX_URL is emptied: the PyTorch wheel indexes are not reachable here, so
#      BOTH test images get the PyPI torch wheel (a CUDA build that also runs on the CPU). The
#      CPU image built here is therefore not CPU-only and far larger than a real one;
#   5. runs inside each built image, as uid 1000 with the image's environment and workdir (a
#      writable container mount entered with chroot: `podman run` cannot set rlimits here):
#        vlmctl --help · vlmctl init /tmp/x · vlmctl validate /tmp/x · vlmctl demo --out /tmp/demo
#      and prints PASS/FAIL per command, the image sizes (podman image ls) and the total time.
#
# Environment knobs:
#   ONLY=validate|cpu|cuda   build and check one image only (validate: the light CI image,
#                      docker/Dockerfile.validate, checked to be <= VALIDATE_MAX_MB=250 MB)
#   KEEP_IMAGES=1      keep the built images and the layer cache (default: each image and its
#                      dangling layers are removed right after its checks, so the two builds
#                      never hold their ~25 GB each at once; the Debian base image is always
#                      kept as the cache for the next run)
#   NO_BUILD=1         skip the builds and only run the checks against existing images
#   DEMO_TIMEOUT=900   seconds allowed for `vlmctl demo` (other commands get 300)
#   LOG_DIR=DIR        where build logs go (default: a fresh folder under /tmp)
#
# Exit status: 0 when every build and every check passed, 1 otherwise.
set -uo pipefail

start_ts=$(date +%s)
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_image="localhost/debian:bookworm-slim"
cpu_image="localhost/vlmctl:cpu-test"
cuda_image="localhost/vlmctl:cuda-test"
validate_image="localhost/vlmctl:validate-test"
# The light validation image must stay small (issue #16): podman's size, in MB (10^6 bytes).
VALIDATE_MAX_MB="${VALIDATE_MAX_MB:-250}"
log_dir="${LOG_DIR:-$(mktemp -d /tmp/vlmctl-test-build.XXXXXX)}"
mkdir -p "${log_dir}"
declare -a results=()
failed=0

say() { printf '\n== %s\n' "$*"; }
record() { # record STATUS NAME DETAIL
    results+=("$(printf '%-5s %-34s %s' "$1" "$2" "$3")")
    if [ "$1" = FAIL ]; then failed=1; fi
}

if [ "$(id -u)" != 0 ]; then
    echo "test-build.sh: needs root (apt-get, debootstrap, podman storage, chroot)" >&2
    exit 1
fi

# --- 1. tools -------------------------------------------------------------------------------
say "tools"
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman debootstrap \
        || { echo "cannot install podman/debootstrap" >&2; exit 1; }
fi
podman --version
echo "debootstrap $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null)"

storage="$(podman info --format '{{.Store.GraphRoot}}' 2>/dev/null || echo /var/lib/containers)"
mkdir -p "${storage}"
df -h "${storage}"
free_gb=$(df -BG --output=avail "${storage}" | tail -1 | tr -dc 0-9)
if [ "${free_gb}" -lt 25 ]; then
    echo "WARNING: only ${free_gb} GB free under ${storage}; the two builds need about 25 GB" >&2
fi

# --- 2. base image --------------------------------------------------------------------------
say "base image ${base_image}"
if podman image exists "${base_image}"; then
    echo "reusing ${base_image}"
else
    # The mirror apt already uses (deb822 sources first, then a classic sources.list line).
    mirror="$(awk '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) if($i=="bookworm") print u}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
    if [ -z "${mirror}" ]; then
        mirror="$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)"
    fi
    [ -n "${mirror}" ] || { echo "no bookworm mirror in /etc/apt/sources*" >&2; exit 1; }
    rootfs="$(mktemp -d /var/tmp/vlmctl-rootfs.XXXXXX)"
    t0=$(date +%s)
    if ! debootstrap --variant=minbase bookworm "${rootfs}" "${mirror}" \
        >"${log_dir}/debootstrap.log" 2>&1; then
        tail -20 "${log_dir}/debootstrap.log"
        rm -rf "${rootfs}"
        echo "debootstrap failed (log: ${log_dir}/debootstrap.log)" >&2
        exit 1
    fi
    # What debian:bookworm-slim (and so python:3.11-slim-bookworm) leaves out: apt's lists and
    # caches (80 MB; every Dockerfile runs apt-get update first), docs, man pages, translations.
    rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin \
        "${rootfs}"/var/cache/apt/archives/*.deb
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' \
        'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/linda/*' \
        >"${rootfs}/etc/dpkg/dpkg.cfg.d/docker-slim"
    printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };' \
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' \
        >"${rootfs}/etc/apt/apt.conf.d/docker-clean"
    find "${rootfs}/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/locale/* "${rootfs}"/usr/share/info/*
    tar -C "${rootfs}" -c . | podman import - "${base_image}" >/dev/null
    rm -rf "${rootfs}"
    echo "debootstrap + import: $(( $(date +%s) - t0 )) s"
fi

# --- 3. build args shared by both builds ----------------------------------------------------
# Local wheels: the find-links folders and file:// indexes of the host's pip config, mounted at
# the same paths (the simple indexes link to ../../files/ relative to themselves).
declare -a volumes=() pip_args=()
pip_cfg="$(pip config list 2>/dev/null || python3 -m pip config list 2>/dev/null || true)"
cfg_values() { # every value of a pip config key, across global/user/env scopes
    printf '%s\n' "${pip_cfg}" | sed -n "s/^[^=]*\.$1='\(.*\)'$/\1/p" | tr ' ' '\n' | sort -u
}
declare -A mounted=()
add_mount() {
    local dir="$1"
    [ -d "${dir}" ] || return 1
    if [ -z "${mounted[${dir}]:-}" ]; then
        volumes+=(--volume "${dir}:${dir}:ro")
        mounted[${dir}]=1
    fi
}
for fl in $(cfg_values find-links); do
    d="${fl#file://}"
    if add_mount "${d}"; then pip_args+=(--find-links "${d}"); fi
done
for ix in $(cfg_values extra-index-url) $(cfg_values index-url); do
    case "${ix}" in
        file://*)
            d="${ix#file://}"
            # mount the index's parent so ../files links resolve
            if [ -d "${d}" ] && add_mount "$(dirname "${d}")"; then
                pip_args+=(--extra-index-url "${ix}")
            fi ;;
    esac
done
ca=""
for c in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -f "${c}" ]; then ca="${c}"; break; fi
done
# --format docker: the OCI format drops SHELL, and the Dockerfiles rely on bash with pipefail.
declare -a common=(--isolation chroot --network host --layers --format docker)
common+=("${volumes[@]}")
if [ -n "${ca}" ]; then
    common+=(--volume "${ca}:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
common+=(--build-arg "PIP_EXTRA_ARGS=${pip_args[*]}"
    --build-arg TORCH_INDEX_URL=
    --build-arg PYTHON_VERSION=3.11
    --build-arg "VCS_REF=$(git -C "${repo}" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
echo "local wheel mounts: ${volumes[*]:-none}"
echo "PIP_EXTRA_ARGS: ${pip_args[*]:-none}"
echo "logs: ${log_dir}"

build() { # build NAME IMAGE DOCKERFILE EXTRA_ARGS...
    local name="$1" image="$2" dockerfile="$3"
    shift 3
    say "build ${name}: ${dockerfile} -> ${image}"
    local t0 rc
    t0=$(date +%s)
    podman build "${common[@]}" "$@" -f "${repo}/${dockerfile}" -t "${image}" "${repo}" \
        >"${log_dir}/build-${name}.log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    if [ "${rc}" = 0 ]; then
        grep -E "^torch .* cuda " "${log_dir}/build-${name}.log" | tail -1
        record PASS "build ${name}" "${took} s"
    else
        tail -30 "${log_dir}/build-${name}.log"
        record FAIL "build ${name}" "rc=${rc} after ${took} s (log: ${log_dir}/build-${name}.log)"
    fi
    return "${rc}"
}

# --- 4. run inside a built image ------------------------------------------------------------
# The image's own Env, WorkingDir and User, applied by hand since chroot knows nothing of them.
in_image() { # in_image MOUNT ENVFILE WORKDIR USER TIMEOUT CMD...
    local m="$1" envfile="$2" wd="$3" user="$4" tmo="$5"
    shift 5
    local -a envs=()
    mapfile -t envs <"${envfile}"
    timeout --kill-after=10 "${tmo}" chroot --userspec="${user}" "${m}" \
        /usr/bin/env -i "${envs[@]}" HF_HUB_OFFLINE=1 WANDB_MODE=offline \
        /bin/bash -c 'cd "$0" && exec "$@"' "${wd}" "$@"
}

check_image() { # check_image NAME IMAGE
    local name="$1" image="$2"
    say "run inside ${name} (${image})"
    if ! podman image exists "${image}"; then
        record FAIL "${name}: image" "missing"
        return
    fi
    local cid m envfile wd user
    # A container's mount is writable (an image mount is read-only); nothing is started.
    cid="$(podman create "${image}")" || { record FAIL "${name}: podman create" ""; return; }
    m="$(podman mount "${cid}")"
    envfile="${log_dir}/env-${name}"
    podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "${image}" \
        | sed '/^$/d' >"${envfile}"
    wd="$(podman image inspect --format '{{.Config.WorkingDir}}' "${image}")"
    user="$(podman image inspect --format '{{.Config.User}}' "${image}")"
    [[ "${user}" == *:* ]] || user="${user:-0}:${user:-0}"
    # A minimal /dev and /proc, private to this run.
    mount -t proc proc "${m}/proc"
    mount -t tmpfs -o mode=755 devtmp "${m}/dev"
    local dev
    for dev in null zero full random urandom; do
        touch "${m}/dev/${dev}" && mount --bind "/dev/${dev}" "${m}/dev/${dev}"
    done
    mkdir -p "${m}/dev/shm" && mount -t tmpfs -o mode=1777 shm "${m}/dev/shm"

    run_check() { # run_check LABEL TIMEOUT CMD...
        local label="$1" tmo="$2"
        shift 2
        local out="${log_dir}/${name}-$(echo "${label}" | tr -c 'a-zA-Z0-9' '_').log" t0 rc
        t0=$(date +%s)
        in_image "${m}" "${envfile}" "${wd}" "${user}" "${tmo}" "$@" >"${out}" 2>&1
        rc=$?
        local took=$(( $(date +%s) - t0 ))
        echo "--- \$ $* (rc=${rc}, ${took} s)"
        tail -8 "${out}" | sed 's/^/    /'
        if [ "${rc}" = 0 ]; then
            record PASS "${name}: ${label}" "${took} s"
        else
            record FAIL "${name}: ${label}" "rc=${rc} (log: ${out})"
        fi
        return "${rc}"
    }

    # expect_one_line LABEL EXTRA CMD...: a verb whose extra is missing exits 1 with ONE line
    # on stderr naming the extra (never a traceback).
    expect_one_line() {
        local label="$1" extra="$2"
        shift 2
        local out="${log_dir}/${name}-$(echo "${label}" | tr -c 'a-zA-Z0-9' '_').log" rc lines
        in_image "${m}" "${envfile}" "${wd}" "${user}" 300 "$@" >"${out}" 2>&1
        rc=$?
        lines=$(wc -l <"${out}")
        echo "--- \$ $* (rc=${rc}, expected 1 and one line)"
        sed 's/^/    /' "${out}" | head -5
        if [ "${rc}" = 1 ] && [ "${lines}" = 1 ] && grep -q "vlmctl\[${extra}\]" "${out}"; then
            record PASS "${name}: ${label}" "one line naming [${extra}]"
        else
            record FAIL "${name}: ${label}" "rc=${rc}, ${lines} lines (log: ${out})"
        fi
    }

    run_check "vlmctl --help" 300 vlmctl --help
    rm -rf "${m}/tmp/x" "${m}/tmp/demo"
    if [ "${name}" = validate ]; then
        # The light image: config-level validation of a config set, and the one-liners.
        if run_check "vlmctl init /tmp/x" 300 vlmctl init /tmp/x; then
            run_check "vlmctl validate /tmp/x --config-only" 300 \
                vlmctl validate /tmp/x --config-only --format github
            expect_one_line "vlmctl train /tmp/x (no extra)" train vlmctl train /tmp/x
            expect_one_line "vlmctl preview /tmp/x (no extra)" data vlmctl preview /tmp/x
        else
            record FAIL "${name}: vlmctl validate /tmp/x --config-only" "not run: init failed"
        fi
    else
        if run_check "vlmctl init /tmp/x" 300 vlmctl init /tmp/x; then
            run_check "vlmctl validate /tmp/x" 300 vlmctl validate /tmp/x
        else
            record FAIL "${name}: vlmctl validate /tmp/x" "not run: init failed"
        fi
        run_check "vlmctl demo --out /tmp/demo" "${DEMO_TIMEOUT:-900}" vlmctl demo --out /tmp/demo
    fi

    umount -R -l "${m}/dev" "${m}/proc" 2>/dev/null
    podman umount "${cid}" >/dev/null
    podman rm "${cid}" >/dev/null
}

# --- 5. go ----------------------------------------------------------------------------------
declare -a sizes=()
size_of() { podman image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$1" 2>/dev/null; }
sizes+=("$(size_of "${base_image}")  (the local base)")

# Each image is removed right after its checks unless KEEP_IMAGES=1: one build with its layer
# cache takes about 25 GB here, and the next build needs the room.
cleanup_image() {
    if [ "${KEEP_IMAGES:-0}" != 1 ] && [ "${NO_BUILD:-0}" != 1 ]; then
        podman rmi -f "$1" >/dev/null 2>&1
        podman image prune -f >/dev/null 2>&1
        echo "removed $1 and its dangling layers; $(df -h --output=avail "${storage}" | tail -1) free"
    fi
}

only="${ONLY:-all}"
if [ "${only}" = all ] || [ "${only}" = validate ]; then
    if [ "${NO_BUILD:-0}" = 1 ] || build validate "${validate_image}" docker/Dockerfile.validate \
        --build-arg "BASE_IMAGE=${base_image}"; then
        sizes+=("$(size_of "${validate_image}")")
        check_image validate "${validate_image}"
        bytes="$(podman image inspect --format '{{.Size}}' "${validate_image}" 2>/dev/null || echo 0)"
        mb=$(( bytes / 1000000 ))
        if [ "${bytes}" -gt 0 ] && [ "${mb}" -le "${VALIDATE_MAX_MB}" ]; then
            record PASS "validate: image size" "${mb} MB <= ${VALIDATE_MAX_MB} MB"
        else
            record FAIL "validate: image size" "${mb} MB > ${VALIDATE_MAX_MB} MB"
        fi
    fi
    cleanup_image "${validate_image}"
fi
if [ "${only}" = all ] || [ "${only}" = cpu ]; then
    if [ "${NO_BUILD:-0}" = 1 ] || build cpu "${cpu_image}" docker/Dockerfile.cpu \
        --build-arg "BASE_IMAGE=${base_image}"; then
        sizes+=("$(size_of "${cpu_image}")")
        check_image cpu "${cpu_image}"
    fi
    cleanup_image "${cpu_image}"
fi
if [ "${only}" = all ] || [ "${only}" = cuda ]; then
    if [ "${NO_BUILD:-0}" = 1 ] || build cuda "${cuda_image}" docker/Dockerfile \
        --build-arg "BASE_IMAGE=${base_image}" --build-arg "BUILDER_IMAGE=${base_image}"; then
        sizes+=("$(size_of "${cuda_image}")")
        check_image cuda "${cuda_image}"
    fi
    cleanup_image "${cuda_image}"
fi

say "summary"
printf '%s\n' "${results[@]}"
echo "image sizes (podman image ls):"
printf '  %s\n' "${sizes[@]}"
echo "total time: $(( $(date +%s) - start_ts )) s"
exit "${failed}"
