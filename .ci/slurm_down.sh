#!/usr/bin/env bash
# CI: stop the test cluster that .ci/slurm_up.sh started (slurmd, slurmctld, munged), cancelling any jobs first.
# Idempotent; keeps the packages, configuration, job state and the sacct stand-in (slurm_up.sh starts it again).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "slurm: skipped (not root)"
    exit 0
fi
RUN_DIR=/run/slurm

alive() { # alive PID NAME: PID is a live (not zombie) process named NAME
    local stat state
    # /proc/PID/stat: "PID (COMM) STATE ..."; a killed daemon lingers as a zombie until PID 1 reaps it
    stat="$(cat "/proc/$1/stat" 2>/dev/null || true)"
    state="${stat##*) }"
    state="${state%% *}"
    [ -n "$stat" ] && [ "$state" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null || true)" = "$2" ]
}
stop() { # stop NAME PIDFILE: SIGTERM, then SIGKILL after 10 s
    local pid
    pid="$(cat "$2" 2>/dev/null || true)"
    if [ -z "$pid" ] || ! alive "$pid" "$1"; then
        rm -f "$2"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        alive "$pid" "$1" || { rm -f "$2"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$2"
}

if command -v scancel >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
    scancel --full --quiet "--user=$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do # let the jobs' processes end while slurmd still runs
        [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && break
        sleep 0.2
    done
fi
stop slurmd "$RUN_DIR/slurmd.pid"
stop slurmctld "$RUN_DIR/slurmctld.pid"
stop munged /run/munge/munged.pid
echo "slurm: stopped"
