#!/usr/bin/env bash
# Start a single-node SLURM (slurmctld + slurmd + munge) on this machine, as root, without
# systemd or cgroups. Used by CI (.ci/run) for the dispatch tests; handy on a workstation.
#   sudo slurm/start_local_slurm.sh            # then: sinfo, sbatch, squeue
#   sudo slurm/start_local_slurm.sh stop
# Facts it relies on (Debian slurm-wlm 22/23): ProctrackType=proctrack/linuxproc and
# TaskPlugin=task/none need no cgroups; munge gets a private key and socket directory (chmod 755 so
# that unprivileged clients can reach the socket); AuthInfo points slurm at that socket.
set -euo pipefail
RUN=${SLURM_LOCAL_DIR:-/tmp/superionic-slurm}
CONF=/etc/slurm/slurm.conf
stop() {
  pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
  for _ in $(seq 1 50); do
    running=0
    for d in slurmd slurmctld munged; do pgrep -x "$d" >/dev/null && running=1; done
    [ "$running" = 0 ] && return 0
    sleep 0.2
  done
  for d in slurmd slurmctld munged; do pkill -9 -x "$d" || true; done
}
if [ "${1:-}" = "stop" ]; then stop; exit 0; fi
[ "$(id -u)" = "0" ] || { echo "start_local_slurm.sh: run as root (it starts daemons)" >&2; exit 1; }
for exe in slurmctld slurmd munged mungekey sinfo; do
  command -v "$exe" >/dev/null || { echo "start_local_slurm.sh: $exe not installed (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 1; }
done
mkdir -p "$RUN"/{munge,spool/ctld,spool/d,log} /etc/slurm /etc/munge
chmod 755 "$RUN" "$RUN/munge"
if [ ! -s /etc/munge/munge.key ]; then mungekey --create --keyfile=/etc/munge/munge.key --force; fi
chown root:root /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --socket="$RUN/munge/munge.socket.2" --force \
  --pid-file="$RUN/munge/munged.pid" --log-file="$RUN/log/munged.log" --key-file=/etc/munge/munge.key
chmod 777 "$RUN/munge/munge.socket.2" 2>/dev/null || true
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)
cat > "$CONF" <<CONF
ClusterName=superionic
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN/munge/munge.socket.2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$RUN/spool/ctld
SlurmdSpoolDir=$RUN/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
pgrep -x slurmctld >/dev/null || slurmctld -i
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do
  if timeout 5 sinfo -h -o %T 2>/dev/null | grep -Eq "idle|mix|alloc"; then
    echo "local SLURM up: $(sinfo -h -o '%P %D %T %C')"
    exit 0
  fi
  sleep 1
done
echo "start_local_slurm.sh: SLURM did not come up; logs in $RUN/log" >&2
tail -n 20 "$RUN/log/slurmctld.log" "$RUN/log/slurmd.log" >&2 || true
exit 1
