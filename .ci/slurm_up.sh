#!/usr/bin/env bash
# CI: bring up a real single-node Slurm cluster (Debian's slurm-wlm 22.05) on this machine, for the tests of
# `--launcher slurm`. Idempotent: a second run leaves a healthy cluster as it is. No systemd is needed: the
# daemons are started directly. Without root or apt-get it does nothing (one line, exit 0).
# Stop it with .ci/slurm_down.sh.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "slurm: skipped (not root)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm: skipped (no apt-get)"
    exit 0
fi

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_SPOOL=/var/spool/slurmctld
D_SPOOL=/var/spool/slurmd
NODE="$(hostname -s)"

# --- packages ------------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
    || ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    APT_LOG="$(mktemp)"
    # no recommends: they pull ~30 plugin packages (hdf5, influxdb, rocm...) that a test cluster does not use
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; } \
        >"$APT_LOG" 2>&1; then
        cat "$APT_LOG" >&2
        echo "slurm: could not install slurm-wlm" >&2
        exit 1
    fi
    rm -f "$APT_LOG"
fi

# --- munge -----------------------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || { echo "slurm: munged does not answer" >&2; exit 1; }
fi

# --- configuration -----------------------------------------------------------------------------------------------
install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$CTLD_SPOOL" "$D_SPOOL"

# the node's hardware as slurmd sees it, e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
# ThreadsPerCore=1 RealMemory=24105"
HW="$(slurmd -C | head -n 1)"
hw() { sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS="$(hw CPUs)"
SOCKETS="$(hw SocketsPerBoard)"
CORES="$(hw CoresPerSocket)"
THREADS="$(hw ThreadsPerCore)"
MEM="$(hw RealMemory)"
if [ -z "$CPUS" ] || [ -z "$MEM" ] || [ -z "$SOCKETS" ] || [ -z "$CORES" ] || [ -z "$THREADS" ]; then
    echo "slurm: cannot read the hardware from 'slurmd -C': $HW" >&2
    exit 1
fi
# memory is a consumable resource: a job that asks for none gets DefMemPerCPU per CPU (without it, a job
# would get the whole node's memory and no two jobs could run side by side)
DEF_MEM=$((MEM / CPUS))

NEW_CONF="$(mktemp)"
trap 'rm -f "$NEW_CONF"' EXIT
cat >"$NEW_CONF" <<EOF
# written by kdlab's .ci/slurm_up.sh: a single-node test cluster
ClusterName=kdlab-ci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM
JobRequeue=1
ReturnToService=2
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$D_SPOOL
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# fast turnaround for tests: schedule every 2 s, cancel a job whose dependency can never be met (else it
# pends forever), SIGKILL 2 s after SIGTERM, keep finished jobs 10 min for 'scontrol show job'
SchedulerParameters=sched_interval=2,bf_interval=2
DependencyParameters=kill_invalid_depend
KillWait=2
MinJobAge=600
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$NODE CPUs=$CPUS Boards=1 SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

CHANGED=0
if ! cmp -s "$NEW_CONF" "$CONF_DIR/slurm.conf"; then
    install -m 0644 "$NEW_CONF" "$CONF_DIR/slurm.conf"
    CHANGED=1
fi
CGROUP_CONF="CgroupPlugin=cgroup/v1
IgnoreSystemd=yes"
if [ "$(cat "$CONF_DIR/cgroup.conf" 2>/dev/null)" != "$CGROUP_CONF" ]; then
    printf '%s\n' "$CGROUP_CONF" >"$CONF_DIR/cgroup.conf"
    CHANGED=1
fi

# --- daemons -------------------------------------------------------------------------------------------------
alive() { # alive PID NAME: PID is a live (not zombie) process named NAME
    local stat state
    # /proc/PID/stat: "PID (COMM) STATE ..."; a killed daemon lingers as a zombie until PID 1 reaps it
    stat="$(cat "/proc/$1/stat" 2>/dev/null || true)"
    state="${stat##*) }"
    state="${state%% *}"
    [ -n "$stat" ] && [ "$state" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null || true)" = "$2" ]
}
running() { # running NAME: its pid file names a live process of that name
    local pid
    pid="$(cat "$RUN_DIR/$1.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && alive "$pid" "$1"
}
stop() { # stop NAME: SIGTERM, then SIGKILL after 10 s
    local pid
    running "$1" || return 0
    pid="$(cat "$RUN_DIR/$1.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        alive "$pid" "$1" || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}
if [ "$CHANGED" = 1 ]; then # a new configuration: restart what runs on the old one
    stop slurmd
    stop slurmctld
fi
running slurmctld || slurmctld
running slurmd || slurmd

# no accounting database here, so the real sacct only says "accounting storage is disabled"; submitit's job
# watcher calls sacct for a job's state (without one, job.state stays UNKNOWN and job.wait() never returns for a
# job that ended without a result): a stand-in answers it from 'scontrol show job'
SHIM="$(dirname "$(readlink -f "$0")")/sacct_shim.py"
if [ -f "$SHIM" ] && ! cmp -s "$SHIM" /usr/local/bin/sacct; then
    install -m 0755 "$SHIM" /usr/local/bin/sacct
fi

# --- wait for the node -------------------------------------------------------------------------------------------
fail() {
    echo "slurm: $1" >&2
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        echo "--- tail of $f" >&2
        tail -n 20 "$f" >&2 2>/dev/null || true
    done
    exit 1
}
STATE=""
DEADLINE=$((SECONDS + 60))
while [ "$SECONDS" -lt "$DEADLINE" ]; do
    running slurmctld || fail "slurmctld is not running"
    running slurmd || fail "slurmd is not running"
    # sinfo retries for a long time while slurmctld does not answer: bound it
    STATE="$(timeout 5 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$STATE" in
        idle | mixed | allocated | completing) break ;;
        down* | drain*)
            # a node that was down when slurmctld went away (e.g. a killed slurmd) stays down: resume it
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            ;;
    esac
    sleep 0.5
done
case "$STATE" in
    idle | mixed | allocated | completing) ;;
    *) fail "node $NODE is not up after 60 s (state: '${STATE:-no answer}')" ;;
esac
echo "slurm: node $NODE $STATE ($CPUS CPUs)"
