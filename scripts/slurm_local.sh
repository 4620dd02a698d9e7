#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (Debian/Ubuntu, run as root), for tests that submit job arrays.
#
#   scripts/slurm_local.sh install     # apt-get slurm-wlm + munge unless sbatch/slurmctld/slurmd/munged exist
#   scripts/slurm_local.sh start DIR   # munged (if not running) + slurmctld + slurmd, all state/logs/pids under DIR
#   eval "$(scripts/slurm_local.sh start DIR | tail -n 1)"   # the last line is `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm_local.sh stop DIR    # cancel its jobs, stop its slurmctld/slurmd by pid file (bounded wait)
#
# One partition, `local` (the default), with one node: this host (short name, address 127.0.0.1), CPUs = nproc
# (override with SLURM_LOCAL_CPUS), CPUs as the consumable resource, so 1-CPU array tasks run side by side.
# No accounting storage (no slurmdbd): `sacct` does not work; use `squeue` and `scontrol show job` (finished jobs are
# kept MinJobAge=300 s). munged is shared by the host: `stop` stops it only if `start DIR` was the one that started it.
# The daemons use the default ports 6817/6818, so only one such cluster runs at a time. Exit 3: cannot install.
set -euo pipefail

die() { echo "slurm_local: $1" >&2; exit "${2:-1}"; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
MUNGE_PID=/run/munge/munged.pid

stop_pidfile() {  # stop_pidfile FILE: SIGTERM, up to 10 s, then SIGKILL
  local pid i
  alive "$1" || { rm -f "$1"; return 0; }
  pid=$(cat "$1"); kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true; rm -f "$1"
}

cmd_install() {
  if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
      && { command -v munged >/dev/null || [[ -x /usr/sbin/munged ]]; }; then
    return 0
  fi
  [[ $(id -u) -eq 0 ]] || die "cannot install slurm-wlm and munge: not root (uid $(id -u))" 3
  command -v apt-get >/dev/null || die "cannot install slurm-wlm and munge: no apt-get on this machine" 3
  apt-get update -qq >/dev/null 2>&1 || die "cannot install slurm-wlm and munge: apt-get update failed" 3
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
    || die "cannot install slurm-wlm and munge: apt-get install failed" 3
}

cmd_stop() {
  local dir=$1
  if alive "$dir/slurmctld.pid"; then  # cancel its jobs first, so that no job step outlives the daemons
    SLURM_CONF="$dir/slurm.conf" timeout 5 scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 25); do
      [[ -z $(SLURM_CONF="$dir/slurm.conf" timeout 5 squeue -h -t R,CG -o %i 2>/dev/null) ]] && break; sleep 0.2
    done
  fi
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  if [[ -f "$dir/munged.started" ]]; then stop_pidfile "$MUNGE_PID"; rm -f "$dir/munged.started"; fi
}

start_munged() {
  local dir=$1
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    head -c 1024 /dev/urandom > /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  alive "$MUNGE_PID" && return 0
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
  touch "$dir/munged.started"
  for _ in $(seq 25); do munge -n </dev/null >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "munged started but \`munge -n\` fails"
}

cmd_start() {
  local dir host cpus mem others
  mkdir -p "$1"; dir=$(cd "$1" && pwd)
  cmd_stop "$dir"  # a partial previous cluster from DIR
  others=$(ps -eo stat=,pid=,comm= | awk '$1 !~ /^Z/ && ($3 == "slurmctld" || $3 == "slurmd") {print $2}' | xargs)
  [[ -z $others ]] || die "another slurmctld/slurmd is running (pids $others; ports 6817/6818): stop it first"
  start_munged "$dir"
  host=$(hostname -s); cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
  mem=$(slurmd -C 2>/dev/null | grep -o 'RealMemory=[0-9]*' | cut -d= -f2 || true)
  rm -rf "$dir/state" "$dir/spool" "$dir/log"; mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat > "$dir/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1,sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000
MaxArraySize=100001
MaxJobCount=200000
MinJobAge=300
MessageTimeout=5
SlurmdTimeout=30
SlurmctldTimeout=30
InactiveLimit=0
KillWait=2
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus${mem:+ RealMemory=$mem} State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -c -f "$SLURM_CONF" || die "slurmctld failed to start: $(tail -n 5 "$dir/log/slurmctld.log" 2>/dev/null)"
  slurmd -f "$SLURM_CONF" || die "slurmd failed to start: $(tail -n 5 "$dir/log/slurmd.log" 2>/dev/null)"
  local state=""
  for _ in $(seq 150); do  # 30 s
    state=$(timeout 5 sinfo -h -N -n "$host" -o %t 2>/dev/null || true)
    [[ $state == idle ]] && break
    [[ $state == down* || $state == drain* ]] && timeout 5 scontrol update nodename="$host" state=resume >/dev/null 2>&1
    sleep 0.2
  done
  [[ $state == idle ]] || die "node $host not idle after 30 s (state '$state'); logs in $dir/log"
  echo "export SLURM_CONF=$SLURM_CONF"
}

case "${1:-}" in
  install) cmd_install ;;
  start) [[ $# -eq 2 ]] || die "usage: $0 start DIR"; cmd_start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; [[ ! -d $2 ]] || cmd_stop "$(cd "$2" && pwd)" ;;
  *) die "usage: $0 install | start DIR | stop DIR" 2 ;;
esac
