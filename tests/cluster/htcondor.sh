#!/usr/bin/env bash
# A real one-machine HTCondor pool for the tests: Debian 13's `minicondor` in a
# `debootstrap trixie` chroot (Debian 12 has no HTCondor), run as root without
# systemd. Jobs are submitted as the chroot's unprivileged user `katp`; they run
# the project's Python, bind-mounted read-only into the chroot at the same paths.
#
#   tests/cluster/htcondor.sh start [PYTHON]   build the chroot if missing, mount, start condor
#   tests/cluster/htcondor.sh stop             stop condor by pid, unmount what start mounted
#   tests/cluster/htcondor.sh status           condor_status of the pool
#   tests/cluster/htcondor.sh running          exit status 0 if this script's condor runs
#
# Idempotent: `start` on a running pool only waits for its slot; `stop` on a
# stopped one does nothing. `start` prints the folder of host-side wrappers
# (condor_submit, condor_rm, condor_q, condor_status) that run the pool's
# commands inside the chroot as `katp`: put it first on PATH.
#
# Environment: KATPARALLEL_CONDOR_ROOT (default /work/condor-root) is the chroot
# folder; KATPARALLEL_DEBIAN_MIRROR overrides the mirror read from apt's sources.
set -euo pipefail

ROOT=${KATPARALLEL_CONDOR_ROOT:-/work/condor-root}
STATE=$ROOT/.katparallel            # pid file, mount list, host-side wrappers
USER_NAME=katp
USER_ID=2000
REPO=$(cd "$(dirname "$0")/../.." && pwd)

die() { echo "htcondor.sh: $*" >&2; exit 1; }

mirror() {
    if [[ -n ${KATPARALLEL_DEBIAN_MIRROR:-} ]]; then echo "$KATPARALLEL_DEBIAN_MIRROR"; return; fi
    local url
    url=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
          | head -n1 | tr -d ' ' || true)
    echo "${url:-http://deb.debian.org/debian}"
}

# Debootstrap into ROOT.partial and rename when complete, so an interrupted
# build never looks like a pool. python3-cffi-backend is named because
# debootstrap does not resolve the virtual package python3-cryptography needs.
build() {
    [[ -x $ROOT/usr/sbin/condor_master && -e $STATE/built ]] && return
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; } \
        || die "cannot install debootstrap (apt-get install debootstrap)"
    local partial=$ROOT.partial
    findmnt -rn -o TARGET | grep -q "^$partial" && die "something is mounted under $partial; unmount it first"
    rm -rf "$partial"
    [[ -e $ROOT ]] && die "$ROOT exists but is not a finished pool; remove it (after unmounting anything in it)"
    mkdir -p "$(dirname "$ROOT")"
    echo "htcondor.sh: debootstrap trixie + minicondor from $(mirror) into $ROOT (a few minutes)" >&2
    debootstrap --variant=minbase --include=minicondor,python3-cffi-backend \
        trixie "$partial" "$(mirror)" > "$partial.log" 2>&1 \
        || die "debootstrap failed; see $partial.log and $partial/debootstrap/debootstrap.log"
    mv "$partial" "$ROOT" && mv "$partial.log" "$ROOT/debootstrap.log"
    mkdir -p "$STATE" && touch "$STATE/built"
}

configure() {  # every start: changes here reach an existing chroot
    cat > "$ROOT/etc/condor/config.d/99-katparallel" <<'EOF'
# A chroot has no private mount namespace or cgroup delegation to give jobs.
MOUNT_UNDER_SCRATCH =
BASE_CGROUP =
# Two one-core jobs at once on any machine (the tests run two Dask workers).
NUM_CPUS = 2
EOF
    chroot "$ROOT" id "$USER_NAME" >/dev/null 2>&1 \
        || chroot "$ROOT" useradd -m -u "$USER_ID" -U "$USER_NAME"
    chmod 755 "$ROOT/root"   # the chroot's own /root: katp traverses it to a bound ~/.pyenv
}

mount_one() {  # mount_one SOURCE [bind options]: at the same path in the chroot, recorded
    local src=$1 dst=$ROOT$1
    mountpoint -q "$dst" && return
    mkdir -p "$dst"
    if [[ $src == /proc ]]; then mount -t proc proc "$dst"; else mount --bind "$src" "$dst"; fi
    echo "$dst" >> "$STATE/mounts"
    [[ ${2:-} == ro ]] && mount -o remount,bind,ro "$dst"
    return 0
}

# The directories a job needs to run PYTHON: its base installation, its venv
# and this checkout (an editable install), outermost only.
python_dirs() {
    local python=$1
    [[ -x $python ]] || die "no Python at $python (make install first)"
    { "$python" -c 'import os, sys; print(os.path.realpath(sys.base_prefix)); print(os.path.realpath(sys.prefix))'
      echo "$REPO"; } | sort -u | awk '{ for (i = 1; i <= n; i++) if (index($0 "/", d[i] "/") == 1) next; d[++n] = $0; print }'
}

mount_all() {
    local python=$1 dir
    mkdir -p "$STATE"
    mount_one /proc
    mount_one /dev
    mount_one /dev/shm   # POSIX semaphores of the workers' multiprocessing
    for dir in $(python_dirs "$python"); do
        case $dir in
            /|/usr|/usr/*|/bin*|/sbin*|/lib*|/etc*|/var*|/run*|/proc*|/dev*|/sys*)
                die "$python lives in $dir, which the chroot has its own of; use a Python installed elsewhere (pyenv, conda, /opt)";;
        esac
        mount_one "$dir" ro
    done
}

wrappers() {
    local bin=$STATE/bin cmd
    mkdir -p "$bin"
    cat > "$bin/condor" <<EOF
#!/usr/bin/env bash
# \$(basename \$0) ARGS on the host = the same command in the pool at $ROOT, as $USER_NAME.
# A submit file given as the last argument (a host path) is copied into the chroot's /tmp.
set -euo pipefail
cmd=\$(basename "\$0"); args=("\$@")
if [[ \$cmd == condor_submit && \$# -gt 0 && -f \${args[-1]} ]]; then
    copy=\$(mktemp -p "$ROOT/tmp" submit.XXXXXX)
    trap 'rm -f "\$copy"' EXIT
    cp "\${args[-1]}" "\$copy" && chmod 644 "\$copy"
    args[-1]=/tmp/\$(basename "\$copy")
fi
chroot --userspec=$USER_ID:$USER_ID "$ROOT" /usr/bin/env -i HOME=/home/$USER_NAME \\
    PATH=/usr/bin:/bin /bin/sh -c 'cd && exec "\$@"' sh "\$cmd" "\${args[@]}"
EOF
    chmod 755 "$bin/condor"
    for cmd in condor_submit condor_rm condor_q condor_status condor_history; do ln -sf condor "$bin/$cmd"; done
    echo "$bin"
}

running_pid() {  # the condor_master this script started, if it is still running
    local pid
    pid=$(cat "$STATE/master.pid" 2>/dev/null) || return 1
    [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$ROOT" ]] || return 1
    echo "$pid"
}

wait_for_slot() {
    local i
    for i in $(seq 120); do
        chroot "$ROOT" condor_status -af Name 2>/dev/null | grep -q . && return
        running_pid >/dev/null || die "condor_master exited; see $ROOT/var/log/condor/MasterLog"
        sleep 1
    done
    die "no slot in condor_status after 120 s; see $ROOT/var/log/condor/"
}

start() {
    [[ $(id -u) == 0 ]] || die "must run as root (chroot, mount)"
    build
    configure
    mount_all "${1:-$REPO/.venv/bin/python}"
    if ! running_pid >/dev/null; then
        grep -q "[[:space:]]$(hostname)\$" "$ROOT/etc/hosts" || echo "127.0.0.1 $(hostname)" >> "$ROOT/etc/hosts"
        chroot "$ROOT" install -d -o condor -g condor -m 0775 /run/condor /var/lock/condor
        setsid chroot "$ROOT" /usr/sbin/condor_master -f < /dev/null > "$STATE/master.out" 2>&1 &
        echo $! > "$STATE/master.pid"
    fi
    wait_for_slot
    wrappers
}

stop() {
    local pid i
    if pid=$(running_pid); then
        kill -TERM "$pid"   # condor_master shuts its daemons and their jobs down
        for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$STATE/master.pid"
    # Anything left in the chroot was started by that condor_master.
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$ROOT" ]] && kill -KILL "$pid" 2>/dev/null
    done
    if [[ -f $STATE/mounts ]]; then
        tac "$STATE/mounts" | while read -r dst; do
            if mountpoint -q "$dst"; then umount "$dst" || die "cannot unmount $dst"; fi
        done
        rm -f "$STATE/mounts"
    fi
}

case ${1:-} in
    start) start "${2:-}";;
    stop) stop;;
    status) chroot "$ROOT" condor_status;;
    running) running_pid > /dev/null;;
    *) die "usage: $0 start [PYTHON] | stop | status | running";;
esac
