#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `slurm` tests and for trying profiles/slurm:
# Debian's slurmctld + slurmd + munge on localhost, the node's real CPUs and memory, one partition
# `local`, no accounting database.
#
#   bash scripts/slurm-local.sh [start]   install (apt-get, as root) if needed, configure, start; idempotent
#   bash scripts/slurm-local.sh status    exit 0 when the node accepts jobs (prints sinfo)
#   bash scripts/slurm-local.sh stop      stop slurmd, slurmctld and munged
#
# Job status without accounting: `sacct` needs slurmdbd, so Snakemake's SLURM plugin is told to ask
# `squeue` (`--slurm-status-command squeue`), and MinJobAge keeps finished jobs visible to squeue for
# an hour (the plugin falls back to sacct when MinJobAge is under 3x its first status interval).
# Containers without systemd or cgroups: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE=/var/lib/kebr-slurm
LOGS=/var/log/kebr-slurm
MARK="# written by kebr scripts/slurm-local.sh"
PARTITION=local

die() { echo "slurm-local: $*" >&2; exit 1; }

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
    local missing=()
    for cmd in munged slurmctld slurmd sbatch squeue; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root to install slurmctld slurmd slurm-client munge"
    echo "slurm-local: installing Debian's slurmctld slurmd slurm-client munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    if ! running /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged
    fi
    munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
}

write_config() {
    # The node as slurmd sees it: real CPUs, sockets, cores and memory (a node configured with more
    # than it has is drained by slurmctld).
    local node
    node=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
    mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" /etc/slurm
    local text
    text=$(cat <<EOF
$MARK
ClusterName=kebr-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
InactiveLimit=0
KillWait=10
SlurmdTimeout=60
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/kebr-slurmctld.pid
SlurmdPidFile=/run/kebr-slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: not touching it"
    fi
    if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$text" ]; then
        printf '%s\n' "$text" > "$CONF"
        CHANGED=1
    fi
}

wait_idle() {
    for _ in $(seq 60); do
        local state
        state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
        case "$state" in
            idle|mix|alloc) return 0 ;;
            down*|drain*|drng*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    sinfo >&2 || true
    die "the node did not become idle in 60 s (see $LOGS/slurmctld.log and $LOGS/slurmd.log)"
}

start() {
    install
    [ "$(id -u)" -eq 0 ] || die "starting the daemons needs root"
    CHANGED=0
    write_config
    start_munge
    if [ "$CHANGED" -eq 1 ]; then
        stop_slurm  # a new config: restart both daemons on it
    fi
    running /run/kebr-slurmctld.pid || slurmctld
    running /run/kebr-slurmd.pid || slurmd -N localhost
    wait_idle
    echo "slurm-local: up (partition $PARTITION): $(sinfo -h -o '%P %D %c cpus %m MB %t')"
}

stop_slurm() {
    local pidfile
    for pidfile in /run/kebr-slurmd.pid /run/kebr-slurmctld.pid; do
        if running "$pidfile"; then
            local pid
            pid=$(cat "$pidfile")
            kill "$pid"
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        fi
    done
}

stop() {
    stop_slurm
    if running /run/munge/munged.pid; then
        kill "$(cat /run/munge/munged.pid)"
    fi
    echo "slurm-local: stopped"
}

status() {
    running /run/kebr-slurmctld.pid || die "slurmctld is not running"
    running /run/kebr-slurmd.pid || die "slurmd is not running"
    sinfo
    case "$(sinfo -h -n localhost -o %t)" in
        idle|mix|alloc) ;;
        *) die "the node does not accept jobs" ;;
    esac
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
