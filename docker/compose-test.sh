#!/usr/bin/env bash
# Build the images and run docker-compose.yml under podman, then check it end to end:
# /health, /ready (SmolLM2-135M-Instruct loaded), a dev token minted inside the gateway, /infer
# answering "Paris" from the CPU worker, the worker's heartbeat key in Redis, graceful stops.
#
#   sudo bash docker/compose-test.sh        # root: podman runs rootful here
#
# Needs: Debian 12 host, root, internet for apt and PyPI (not for torch: the CPU
# wheel is taken from TINYLLAMA_TORCH_WHEEL or /opt/wheels, never downloaded).
# No image registry is used: a Debian bookworm rootfs (debootstrap) stands in for
# every base image the Dockerfiles and compose name. The base is built from nothing
# whenever the cache below holds none (every CI run on a new machine); the cache only
# saves minutes. Every chroot step runs with a clean environment (HOST_ENV_FREE below):
# a host TMPDIR, proxy or locale inside a fresh rootfs breaks dpkg's scripts.
# Everything podman creates lives under one temporary folder and is removed on exit,
# pass or fail. Knobs (environment):
#   TINYLLAMA_COMPOSE_PORT   host port for the gateway (default 18080)
#   TINYLLAMA_TORCH_WHEEL    path of torch-<pin>+cpu-cp311-*.whl (default: search /opt/wheels)
#   TINYLLAMA_BASE_CACHE     folder that keeps the base rootfs tarball between runs on one
#                            machine (default /var/tmp/tinyllama-compose-base);
#                            TINYLLAMA_BASE_CACHE= (empty) forces a cold build, as on a new machine
#   TINYLLAMA_DEBIAN_MIRROR  default http://deb.debian.org/debian
#   TINYLLAMA_KEEP=1         leave the stack running and skip clean-up (debugging)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STARTED=$(date +%s)
PORT=${TINYLLAMA_COMPOSE_PORT:-18080}
MIRROR=${TINYLLAMA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_CACHE=${TINYLLAMA_BASE_CACHE-/var/tmp/tinyllama-compose-base}
PROJECT="tinyllama-ci-$$"
BASE_IMAGE=localhost/tinyllama-base:bookworm
# What the stand-in base needs: Python 3.11 + venv for the images, redis for redis:7.
BASE_PACKAGES="python3 python3-venv python3-pip python-is-python3 redis-server ca-certificates"
WHEEL_DIR=$ROOT/docker/wheels
COPIED_WHEEL=""
tools_pid=""
build_pids=()

# Commands that run inside the new rootfs see only this environment, never the host's
# (its TMPDIR points at a folder the rootfs does not have, for one).
HOST_ENV_FREE=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)

say() { echo "[compose-test +$(($(date +%s) - STARTED))s] $*"; }
die() { say "FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (rootful podman, apt-get, debootstrap)"
[ -f docker-compose.yml ] || die "no docker-compose.yml in $ROOT"

WORK=$(mktemp -d /var/tmp/tinyllama-compose.XXXXXX)
export CONTAINERS_CONF=$WORK/conf/containers.conf
export CONTAINERS_STORAGE_CONF=$WORK/conf/storage.conf
export CONTAINERS_REGISTRIES_CONF=$WORK/conf/registries.conf
export TINYLLAMA_COMPOSE_PORT=$PORT
export TMPDIR=$WORK/tmp  # buildah stages contexts there: gone with $WORK
mkdir -p "$TMPDIR"
TOOLS=$WORK/tools
COMPOSE=("$TOOLS/bin/podman-compose" -p "$PROJECT" -f "$ROOT/docker-compose.yml")

container_of() {  # the container id of compose service $1
  podman ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --format '{{.ID}}' | head -n 1
}

dump_logs() {
  for service in redis dev-keys gateway worker; do
    id=$(container_of "$service" 2>/dev/null || true)
    [ -n "$id" ] || continue
    echo "----- logs: $service -----"
    podman logs --tail 60 "$id" 2>&1 || true
  done
}

remove_netavark_chains() {  # unhook, flush and delete every NETAVARK* chain
  local table chain rule
  for table in nat filter; do
    local chains
    chains=$(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^NETAVARK/ {print $2}')
    [ -n "$chains" ] || continue
    for chain in $chains; do
      iptables -t "$table" -S 2>/dev/null | grep -E -- "-j $chain( |\$)" | sed 's/^-A/-D/' |
        while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null; done
    done
    for chain in $chains; do iptables -t "$table" -F "$chain" 2>/dev/null; done
    for chain in $chains; do iptables -t "$table" -X "$chain" 2>/dev/null; done
  done
  return 0
}

cleanup() {
  status=$?
  trap - EXIT INT TERM
  set +e  # clean up as much as possible, whatever fails
  if [ "$status" != 0 ] && command -v podman >/dev/null && [ -x "$TOOLS/bin/podman-compose" ]; then
    dump_logs
  fi
  if [ "${TINYLLAMA_KEEP:-0}" = 1 ]; then
    say "TINYLLAMA_KEEP=1: leaving $WORK and the stack (CONTAINERS_CONF=$CONTAINERS_CONF)"
    exit "$status"
  fi
  say "cleaning up"
  # Stop what this script started in the background (timeout passes TERM on to podman).
  for pid in ${tools_pid:-} ${build_pids[@]+"${build_pids[@]}"}; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if [ -x "$TOOLS/bin/podman-compose" ]; then
    timeout 120 "${COMPOSE[@]}" down -v -t 10 >/dev/null 2>&1 || true
  fi
  if command -v podman >/dev/null && [ -f "$CONTAINERS_STORAGE_CONF" ]; then
    podman rm -a -f -t 5 >/dev/null 2>&1 || true
    podman rmi -a -f >/dev/null 2>&1 || true
    podman system reset -f >/dev/null 2>&1 || true
  fi
  # netavark leaves its chains behind once its last network is gone.
  if command -v iptables >/dev/null; then
    remove_netavark_chains
  fi
  [ -z "$COPIED_WHEEL" ] || rm -f "$COPIED_WHEEL"
  rm -rf "$WORK"
  say "done (exit $status) in $(($(date +%s) - STARTED)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools ---------------------------------------------------------------------------
missing=()
for tool in podman runc debootstrap iptables; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing podman runc debootstrap (missing: ${missing[*]})"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq podman runc debootstrap iptables >/dev/null
fi
say "podman-compose into $TOOLS (in the background)"
(python3 -m venv "$TOOLS" &&
  "$TOOLS/bin/pip" install -q --disable-pip-version-check "podman-compose==1.6.0" "PyYAML>=6") \
  >"$WORK/tools.log" 2>&1 &
tools_pid=$!

# --- 2. podman configuration: private storage and networks, runc, file limits -------------
mkdir -p "$WORK/conf" "$WORK/networks"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_config_dir = "$WORK/networks"
EOF
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
cat >"$CONTAINERS_REGISTRIES_CONF" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' >/dev/null ||
  die "podman does not start with $CONTAINERS_CONF"

# --- 3. the stand-in base image (Debian bookworm), cached by what goes into it ----------------
base_key=$(printf '%s\n' "bookworm" "$MIRROR" "$BASE_PACKAGES" "v1" | sha256sum | cut -c1-16)
base_tar=""
[ -z "$BASE_CACHE" ] || base_tar="$BASE_CACHE/base-$base_key.tar"
if [ -n "$base_tar" ] && [ -s "$base_tar" ]; then
  say "base rootfs from cache $base_tar"
else
  say "debootstrap bookworm (minbase) + $BASE_PACKAGES"
  rootfs=$WORK/rootfs
  timeout 600 "${HOST_ENV_FREE[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"  # no daemons start in the chroot
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  timeout 600 "${HOST_ENV_FREE[@]}" chroot "$rootfs" /bin/sh -c "
      apt-get update -qq && apt-get install -y -qq --no-install-recommends $BASE_PACKAGES &&
      apt-get clean && rm -rf /var/lib/apt/lists/*" >"$WORK/chroot.log" 2>&1 ||
    { tail -20 "$WORK/chroot.log"; die "apt-get in the chroot failed"; }
  # The host's CA bundle (it may hold a proxy's CA) and a pip that uses it.
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
  rm -f "$rootfs/usr/sbin/policy-rc.d"
  if [ -n "$base_tar" ]; then
    mkdir -p "$BASE_CACHE"
    tar -C "$rootfs" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
  else
    base_tar=$WORK/base.tar
    tar -C "$rootfs" -cf "$base_tar" .
  fi
  rm -rf "$rootfs"
fi
podman import -q \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
  "$base_tar" "$BASE_IMAGE" >/dev/null

wait "$tools_pid" || { cat "$WORK/tools.log"; die "installing podman-compose failed"; }
tools_pid=""

# Every image name compose and the Dockerfiles pull becomes the stand-in.
# shellcheck disable=SC2016
names=$("$TOOLS/bin/python" - <<'PY'
import re, yaml
compose = yaml.safe_load(open("docker-compose.yml"))
names = set()
files = set()
for service in compose["services"].values():
    build = service.get("build")
    if build is None:
        names.add(service["image"])
    else:
        files.add(build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
for path in files:
    stages = set()
    for line in open(path):
        m = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            if m.group(1) not in stages:
                names.add(m.group(1))
            if m.group(2):
                stages.add(m.group(2))
print("\n".join(sorted(names)))
PY
)
for name in $names; do
  case "$name" in */*) qualified=$name ;; *) qualified=docker.io/library/$name ;; esac
  podman tag "$BASE_IMAGE" "$qualified"
  say "stand-in: $qualified"
done

# --- 4. images: built here from the compose file's own build sections -----------------------
wheel=${TINYLLAMA_TORCH_WHEEL:-}
torch_version=$(sed -n 's/^torch==\([0-9][0-9a-z.]*\).*/\1/p' requirements/worker.txt)
if [ -z "$wheel" ]; then
  wheel=$(ls /opt/wheels/torch-"$torch_version"+cpu-cp311-*.whl 2>/dev/null | head -n 1 || true)
fi
[ -n "$wheel" ] && [ -f "$wheel" ] ||
  die "no torch $torch_version CPU wheel (set TINYLLAMA_TORCH_WHEEL): it is never downloaded here"
if [ ! -e "$WHEEL_DIR/$(basename "$wheel")" ]; then
  COPIED_WHEEL="$WHEEL_DIR/$(basename "$wheel")"
  ln "$wheel" "$COPIED_WHEEL" 2>/dev/null || cp "$wheel" "$COPIED_WHEEL"
fi
# shellcheck disable=SC2016
builds=$("$TOOLS/bin/python" - <<'PY'
import yaml
compose = yaml.safe_load(open("docker-compose.yml"))
seen = set()
for name, service in compose["services"].items():
    build = service.get("build")
    if build is None or service.get("profiles"):  # profiles (gpu) are not built here
        continue
    args = " ".join(f"--build-arg={k}={v}" for k, v in (build.get("args") or {}).items())
    line = f"{service['image']} {build.get('dockerfile', 'Dockerfile')} {args}".strip()
    if line not in seen:
        seen.add(line)
        print(line)
PY
)
# In parallel (pip downloads dominate); --layers=false skips committing every step
# (the builder's 1 GB venv), --format docker keeps HEALTHCHECK (OCI drops it).
build_pids=()
build_logs=()
while read -r image dockerfile args; do
  log="$WORK/build-${image//[^A-Za-z0-9.-]/_}.log"
  say "building $image from $dockerfile $args"
  # shellcheck disable=SC2086
  timeout 900 podman build --layers=false --format docker --pull=never --network=host \
    -f "$dockerfile" $args -t "$image" . >"$log" 2>&1 &
  build_pids+=("$!")
  build_logs+=("$log")
done <<<"$builds"
build_failed=0
for i in "${!build_pids[@]}"; do
  if ! wait "${build_pids[$i]}"; then
    tail -40 "${build_logs[$i]}"
    build_failed=1
  fi
done
build_pids=()
[ "$build_failed" = 0 ] || die "an image build failed (log above)"
say "images built"
[ -z "$COPIED_WHEEL" ] || { rm -f "$COPIED_WHEEL"; COPIED_WHEEL=""; }
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -v '<none>' | sed 's/^/  /'

# --- 5. up, and the checks ----------------------------------------------------------------
say "podman-compose up (project $PROJECT, gateway on 127.0.0.1:$PORT)"
timeout 300 "${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 ||
  { tail -40 "$WORK/up.log"; die "podman-compose up failed"; }

say "waiting for /health and /ready (the worker converts SmolLM2 on first start)"
python3 tests/compose/smoke.py ready --url "http://127.0.0.1:$PORT" --timeout 400

gateway=$(container_of gateway)
token=$(podman exec "$gateway" python -m clients.cli token --sub compose-test) ||
  die "could not mint a dev token inside the gateway"
say "minted a dev token inside the gateway (${#token} chars)"
python3 tests/compose/smoke.py infer --url "http://127.0.0.1:$PORT" --token "$token"

redis=$(container_of redis)
beats=$(podman exec "$redis" redis-cli --scan --pattern 'tl:worker:*')
[ -n "$beats" ] || die "no tl:worker:* heartbeat key in Redis"
say "heartbeat keys: $(echo "$beats" | tr '\n' ' ')"

# The images' healthchecks (podman does not schedule them without systemd: run them once).
for service in gateway worker redis; do
  id=$(container_of "$service")
  podman healthcheck run "$id" >/dev/null || die "$service healthcheck is not healthy"
done
say "healthchecks pass: gateway, worker, redis"

# Graceful stop: SIGTERM reaches python through the init, the process exits by itself.
for service in worker gateway; do
  id=$(container_of "$service")
  t0=$(date +%s)
  # (podman logs an error about healthcheck timers that need systemd: not ours)
  podman stop -t 40 "$id" 2> >(grep -v 'healthcheck: unable to get systemd' >&2) >/dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$id")
  say "$service stopped on SIGTERM in $(($(date +%s) - t0)) s, exit code $code"
  [ "$code" != 137 ] || die "$service ignored SIGTERM and was killed"
done
if [ -z "$(podman exec "$redis" redis-cli --scan --pattern 'tl:worker:*')" ]; then
  say "the stopped worker withdrew its heartbeat"
fi
say "PASSED"
