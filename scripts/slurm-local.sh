#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to try (and test) the cluster path:
#   sudo scripts/slurm-local.sh start    # installs slurm-wlm + munge when missing, starts munged, slurmctld, slurmd
#   export SLURM_CONF=/tmp/peft-bench-slurm/slurm.conf   # (the state folder: PEFT_BENCH_SLURM_DIR)
#   peft-bench run suites/smoke.yaml --executor slurm --partition debug
#   sudo scripts/slurm-local.sh stop     # stops the three daemons by their PIDs
# Partition `debug` holds this node (all its CPUs, 90% of its memory, no GPUs); KillWait is short so that jobs
# killed at their time limit end quickly; there is no accounting database (states come from squeue/scontrol).
# Partition `nodes2` holds this node and a second slurmd on the same host (node name `localhost`, its own port and
# spool: Slurm's multiple-slurmd mode), so a job over two nodes runs for real: one task per node, each with its own
# SLURM_NODEID, the node names resolvable as a real cluster's are. Jobs in `debug` never land on the second node.
set -euo pipefail
DIR=${PEFT_BENCH_SLURM_DIR:-/tmp/peft-bench-slurm}
CONF=$DIR/slurm.conf
SECOND=localhost  # the second node's name: resolvable to this host on any machine

install_slurm() {
  if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "error: slurm-wlm and munge are not installed and this is not root (run with sudo)" >&2
    return 3
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "== installing slurm-wlm and munge" >&2
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null; }
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc honours OMP_NUM_THREADS (the tests set 1)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$DIR/state" "$DIR/spool/$host" "$DIR/spool/$SECOND" "$DIR/log"
  cat >"$CONF" <<EOF
ClusterName=peftbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=2
OverTimeLimit=0
InactiveLimit=0
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if [ "$host" != "$SECOND" ]; then
    cat >>"$CONF" <<EOF
NodeName=$SECOND NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=nodes2 Nodes=$host,$SECOND MaxTime=INFINITE State=UP
EOF
  fi
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge
  if [ -f "$DIR/munged.pid" ] && kill -0 "$(cat "$DIR/munged.pid")" 2>/dev/null; then return 0; fi
  munged --force --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --socket=/run/munge/munge.socket.2
}

wait_idle() {
  for _ in $(seq 1 120); do
    # every node idle (sinfo -N: a line per node and partition)
    states=$(SLURM_CONF=$CONF sinfo -h -N -o %T 2>/dev/null | sort -u)
    if [ "$states" = "idle" ]; then
      echo "slurm ready: SLURM_CONF=$CONF (partition debug; nodes2: two nodes)"
      return 0
    fi
    sleep 0.5
  done
  echo "error: the Slurm node did not become idle; logs in $DIR/log" >&2
  return 4
}

stop_pid() {
  local file=$1 pid
  pid=$(cat "$file" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop_slurmds() {
  local file
  for file in "$DIR"/slurmd-*.pid "$DIR/slurmd.pid"; do
    [ -e "$file" ] && stop_pid "$file"
  done
  return 0
}

case "${1:-start}" in
  start)
    install_slurm
    stop_slurmds
    stop_pid "$DIR/slurmctld.pid"
    rm -rf "$DIR/state" "$DIR/spool"
    write_conf
    start_munge
    slurmctld -f "$CONF"
    slurmd -f "$CONF" -N "$(hostname -s)"
    if [ "$(hostname -s)" != "$SECOND" ]; then slurmd -f "$CONF" -N "$SECOND"; fi
    wait_idle
    ;;
  stop)
    stop_slurmds
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munged.pid"
    ;;
  status)
    SLURM_CONF=$CONF sinfo
    ;;
  *)
    echo "usage: scripts/slurm-local.sh start|stop|status" >&2
    exit 2
    ;;
esac
