#!/usr/bin/env bash
# Start or stop a real single-node SLURM cluster (slurmctld + slurmd on localhost, munge auth,
# no accounting database) so that tests can exercise sbatch, requeue and submitit end to end.
#
#   scripts/slurm_cluster.sh start [--install]   # idempotent; waits until the node is idle
#   scripts/slurm_cluster.sh stop                # kills the daemons by their pid files
#   scripts/slurm_cluster.sh status
#   scripts/slurm_cluster.sh env                 # prints: export SLURM_CONF=<dir>/slurm.conf
#
# Everything the cluster writes stays in one private folder, $SLURM_CLUSTER_DIR (default
# /tmp/ganbench-slurm): slurm.conf, state, spool, logs, pid files, and a munged of its own with its
# own key and socket (AuthInfo=socket=...). Nothing under /etc, /var or /run is written, so clients
# (sbatch, sinfo, scancel, submitit) need SLURM_CONF=$SLURM_CLUSTER_DIR/slurm.conf (see `env`).
#
# --install is the only step that changes the system: it runs `apt-get install slurm-wlm munge` when
# the packages are missing (Debian's postinst then creates /etc/munge/munge.key). Pass it only on a
# machine where that is wanted; tests/test_slurm.py passes it only with CI=true or
# GANBENCH_SLURM_INSTALL=1 and otherwise skips when the packages are absent.
#
# Exit codes of `start`: 0 ready, 3 packages missing (and not installable), 4 daemons failed.
# Needs root (slurmd runs as root; SlurmUser=root). Debian packages: slurm-wlm munge.
# A requeued job waits cred_expire (10 s here; SLURM's default is 120 s) before it is eligible again, and the
# schedulers look at pending jobs every 2 s (sched_interval) and 1 s (bf_interval), not SLURM's 60 s and 30 s.
set -euo pipefail

DIR=${SLURM_CLUSTER_DIR:-/tmp/ganbench-slurm}
CONF=$DIR/slurm.conf
MARKER="# written by ganbench scripts/slurm_cluster.sh"
STATE=$DIR/state
SPOOL=$DIR/spool
LOGDIR=$DIR/log
RUNDIR=$DIR/run                     # our pid files; `stop` only kills what `start` started
CTLD_PID=$RUNDIR/slurmctld.pid
SLURMD_PID=$RUNDIR/slurmd.pid
MUNGE_KEYDIR=$DIR/munge             # 0700, owned by munge: the key, seed and log
MUNGE_RUN=$DIR/munge-run            # 0755: munged requires its socket's folder to be searchable by all
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
MUNGE_PID=$MUNGE_RUN/munged.pid
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

make_dir() {
  # Root writes a config and starts daemons from this folder: it must not be someone else's
  # (a world-writable /tmp lets any user create /tmp/ganbench-slurm first).
  if [ -e "$DIR" ]; then
    if [ ! -d "$DIR" ] || [ -L "$DIR" ] || [ "$(stat -c %u "$DIR")" != "$(id -u)" ] \
       || [ -n "$(find "$DIR" -maxdepth 0 -perm /022)" ]; then
      log "$DIR is not a folder owned by $(id -un) and writable only by it; set SLURM_CLUSTER_DIR"
      return 1
    fi
  else
    mkdir -p "$DIR"
  fi
  chmod 0711 "$DIR"  # munge must reach its folders below; nobody can list or write this one
  mkdir -p "$STATE" "$SPOOL" "$LOGDIR" "$RUNDIR" "$MUNGE_KEYDIR" "$MUNGE_RUN"
  chown munge:munge "$MUNGE_KEYDIR" "$MUNGE_RUN"
  chmod 0700 "$MUNGE_KEYDIR"
  chmod 0755 "$MUNGE_RUN"
}

start_munge() {
  if munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; then
    return 0  # our munged is already serving
  fi
  if [ ! -s "$MUNGE_KEYDIR/munge.key" ]; then
    runuser -u munge -- mungekey --create --keyfile="$MUNGE_KEYDIR/munge.key"
  fi
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
    --key-file="$MUNGE_KEYDIR/munge.key" --seed-file="$MUNGE_KEYDIR/munged.seed" \
    --log-file="$MUNGE_KEYDIR/munged.log"
  for _ in $(seq 50); do
    munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

write_conf() {
  local host node
  host=$(hostname -s)
  # The node line of this machine; SLURM_CONF unset, since our slurm.conf may not exist yet.
  node=$(env -u SLURM_CONF slurmd -C | head -n1)
  if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    log "$CONF exists and was not written by this script; refusing to overwrite it"
    return 1
  fi
  cat >"$CONF" <<EOF
$MARKER
ClusterName=ganbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
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
# A test cluster: requeued jobs start again ~10 s after the requeue, not after SLURM's 2 min (see the top).
SchedulerParameters=sched_interval=2,bf_interval=1
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
  make_dir || exit 4
  start_munge || { log "munged failed to start; see $MUNGE_KEYDIR/munged.log"; exit 4; }
  write_conf || exit 4
  export SLURM_CONF=$CONF
  if ! alive "$CTLD_PID"; then
    # -c: start from a clean state; leftover jobs from an earlier cluster must not run again.
    slurmctld -c || { log "slurmctld failed; see $LOGDIR/slurmctld.log"; exit 4; }
  fi
  if ! alive "$SLURMD_PID"; then
    slurmd || { log "slurmd failed; see $LOGDIR/slurmd.log"; exit 4; }
  fi
  wait_idle || exit 4
  log "ready: $(sinfo -h -o '%P %a %D %t' | head -n1); clients need: export SLURM_CONF=$CONF"
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
  alive "$CTLD_PID" && SLURM_CONF=$CONF sinfo || true
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start [--install] | stop | status | env   (folder: \$SLURM_CLUSTER_DIR, default /tmp/ganbench-slurm;" \
          "--install runs apt-get; tests/test_slurm.py passes it only with CI=true or GANBENCH_SLURM_INSTALL=1)" >&2; exit 2 ;;
esac
