#!/usr/bin/env bash
# A one-node Slurm for the test suite, started directly (no systemd, no Docker).
#
#   tests/cluster/slurm.sh install   apt-get the Debian packages if `sinfo` is missing (root only)
#   tests/cluster/slurm.sh start     start munged, slurmctld, slurmd; wait until the node is idle
#   tests/cluster/slurm.sh stop      stop the daemons this script started, by process id
#   tests/cluster/slurm.sh status    exit 0 if Slurm answers, and show `sinfo`
#
# `start` prints one last line: "started" if it started slurmctld, "running" if a
# Slurm was already answering (someone else's: left alone; `stop` will not touch it).
# It writes /etc/slurm/slurm.conf only when there is none, and refuses to start daemons
# on a slurm.conf it did not write. Process ids of what it started are kept in $STATE.
set -euo pipefail

STATE=${KATPARALLEL_SLURM_STATE:-/run/katparallel-slurm}
SPOOL=/var/spool/katparallel-slurm
LOGS=/var/log/katparallel-slurm
CONF=/etc/slurm/slurm.conf
MARK="# Written by katparallel's tests/cluster/slurm.sh"
WAIT=${KATPARALLEL_SLURM_WAIT:-90}   # seconds: only a broken daemon reaches it
HOST=$(hostname -s)

die() { echo "slurm.sh: $*" >&2; exit 1; }

answering() { scontrol ping 2>/dev/null | grep -q "is UP"; }

install_packages() {
    if command -v sinfo >/dev/null && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] \
        && [ -x /usr/sbin/munged ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "slurm.sh: Slurm is not installed and this is not root: the tests marked" \
             "'slurm' need it (as root: apt-get install slurmctld slurmd slurm-client munge)" >&2
        return 0
    fi
    echo "slurm.sh: installing Debian's slurmctld slurmd slurm-client munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0   # a munged is running and its key works
    fi
    install -d -o munge -g munge -m 0700 /etc/munge
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        head -c 1024 /dev/urandom > /etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --force
    cp /run/munge/munged.pid "$STATE/munged.pid"
    for _ in $(seq "$WAIT"); do
        munge -n | unmunge >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "munged did not answer within ${WAIT}s (see /var/log/munge/munged.log)"
}

write_conf() {
    if [ -e "$CONF" ]; then
        grep -qF "$MARK" "$CONF" || die "$CONF exists and was not written by this script," \
            "but no Slurm answers: start your own Slurm, or move $CONF away"
    fi
    local memory cpus
    cpus=$(nproc)
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    install -d "$(dirname "$CONF")" "$SPOOL/ctld" "$SPOOL/d" "$LOGS"
    # The daemons talk over 127.0.0.1: the host name need not resolve.
    cat > "$CONF" <<EOF
$MARK: a one-node test cluster.
ClusterName=katparallel
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# pgid, not linuxproc: a worker whose job script exited first is still found and killed.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Seconds between SIGTERM and SIGKILL of a cancelled job (default 30).
KillWait=5
MpiDefault=none
SchedulerType=sched/backfill
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    # cgroup v2 (a cgroup2 file system at /sys/fs/cgroup): without systemd, slurmd
    # cannot use Slurm 22.05's cgroup/v2 plugin. cgroup v1 and hybrid hosts need nothing.
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        printf '%s\nCgroupPlugin=cgroup/v1\n' "$MARK" > "$(dirname "$CONF")/cgroup.conf"
    fi
}

wait_idle() {
    local state=""
    for _ in $(seq $((WAIT * 2))); do
        state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
        case "$state" in
            idle|mix|alloc) return 0 ;;
        esac
        sleep 0.5
    done
    die "node $HOST is '$state', not idle, after ${WAIT}s (see $LOGS/)"
}

start() {
    command -v sinfo >/dev/null || die "Slurm is not installed: run '$0 install' (as root)"
    if answering; then
        wait_idle
        echo running
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "starting Slurm's daemons needs root"
    install -d -m 0755 "$STATE"
    start_munge
    write_conf
    # -c: start from a clean state (no jobs left over from an earlier run).
    /usr/sbin/slurmctld -c
    for _ in $(seq $((WAIT * 2))); do answering && break; sleep 0.5; done
    answering || die "slurmctld did not answer within ${WAIT}s (see $LOGS/slurmctld.log)"
    /usr/sbin/slurmd -c
    wait_idle
    echo started
}

stop_pid() {
    local file=$STATE/$1.pid pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    # The pid is that daemon's still (not reused by another process since).
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
        kill "$pid"
        for _ in $(seq $((WAIT * 2))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$file"
}

stop() {
    # Only what `start` started: its pid files are in $STATE (slurmctld and slurmd
    # write theirs there through slurm.conf; munged's is copied there).
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
}

status() {
    answering || { echo "Slurm is not running" >&2; return 1; }
    sinfo
}

case "${1:-}" in
    install) install_packages ;;
    start|stop|status) "$1" ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
