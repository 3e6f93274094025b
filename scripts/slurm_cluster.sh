#!/usr/bin/env bash
# Start or stop a real single-node SLURM cluster (slurmctld + slurmd on localhost, munge auth,
# no accounting database) so that tests can exercise sbatch, requeue and submitit end to end.
#
#   scripts/slurm_cluster.sh start [--install]   # idempotent; waits until the node is idle
#   scripts/slurm_cluster.sh stop                # kills the daemons by their pid files
#   scripts/slurm_cluster.sh status
#
# Exit codes of `start`: 0 ready, 3 packages missing (and not installable), 4 daemons failed.
# Needs root (daemons run as root; SlurmUser=root). Debian packages: slurm-wlm munge.
# Recipe and timings: /work/shared/SLURM.md (requeued jobs wait ~2 min before they are eligible).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="# written by ganbench scripts/slurm_cluster.sh"
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGDIR=/var/log/slurm
RUNDIR=/run/ganbench-slurm          # our pid files; `stop` only kills what `start` started
CTLD_PID=$RUNDIR/slurmctld.pid
SLURMD_PID=$RUNDIR/slurmd.pid
MUNGE_PID=$RUNDIR/munged.pid        # only present when this script started munged
IDLE_TIMEOUT_S=${SLURM_CLUSTER_IDLE_TIMEOUT_S:-60}

log() { echo "slurm_cluster: $*" >&2; }

have_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null
}

install_packages() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "cannot install slurm-wlm/munge: need root and apt-get"
    return 1
  fi
  log "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0  # a munged is already serving (ours or the system's)
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  # munged writes its pid file under /run/munge; copy it so that `stop` knows we started it.
  for _ in $(seq 50); do
    [ -s /run/munge/munged.pid ] && break
    sleep 0.1
  done
  cp /run/munge/munged.pid "$MUNGE_PID"
  munge -n | unmunge >/dev/null
}

write_conf() {
  local host node
  host=$(hostname -s)
  node=$(slurmd -C | head -n1)
  if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    log "$CONF exists and was not written by this script; refusing to overwrite it"
    return 1
  fi
  mkdir -p /etc/slurm "$STATE" "$SPOOL" "$LOGDIR"
  cat >"$CONF" <<EOF
$MARKER
ClusterName=ganbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
# Short timeouts: one local node, tests want quick turnarounds.
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
MinJobAge=300
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_idle() {
  local deadline=$((SECONDS + IDLE_TIMEOUT_S)) state
  while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
    case "$state" in
      idle | mix | alloc) return 0 ;;
      down* | drain*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  log "node did not become idle within ${IDLE_TIMEOUT_S}s (last state: ${state:-none}); see $LOGDIR"
  return 1
}

cmd_start() {
  if ! have_packages; then
    if [ "${1:-}" = "--install" ]; then
      install_packages || exit 3
    fi
    have_packages || { log "slurm-wlm/munge not installed (run with --install, as root)"; exit 3; }
  fi
  [ "$(id -u)" = 0 ] || { log "must run as root"; exit 4; }
  mkdir -p "$RUNDIR"
  start_munge || { log "munged failed to start"; exit 4; }
  write_conf || exit 4
  if ! alive "$CTLD_PID"; then
    # -c: start from a clean state; leftover jobs from an earlier cluster must not run again.
    slurmctld -c || { log "slurmctld failed; see $LOGDIR/slurmctld.log"; exit 4; }
  fi
  if ! alive "$SLURMD_PID"; then
    slurmd || { log "slurmd failed; see $LOGDIR/slurmd.log"; exit 4; }
  fi
  wait_idle || exit 4
  log "ready: $(sinfo -h -o '%P %a %D %t' | head -n1)"
}

stop_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$f"
}

cmd_stop() {
  stop_pidfile "$SLURMD_PID"
  stop_pidfile "$CTLD_PID"
  stop_pidfile "$MUNGE_PID"
  log "stopped"
}

cmd_status() {
  alive "$CTLD_PID" && echo "slurmctld running (pid $(cat "$CTLD_PID"))" || echo "slurmctld not running"
  alive "$SLURMD_PID" && echo "slurmd running (pid $(cat "$SLURMD_PID"))" || echo "slurmd not running"
  alive "$CTLD_PID" && sinfo || true
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start [--install] | stop | status" >&2; exit 2 ;;
esac
