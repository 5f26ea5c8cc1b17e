#!/usr/bin/env bash
# Bring up a single-node SLURM on this machine (Debian slurmctld, slurmd, munge; as root), for
# the campaign test and for trying hydra/launcher=slurm locally. Idempotent: a SLURM that
# already answers is left alone. One node (this host, every core, most of the memory), one
# partition "debug", accounting off (submitit then follows jobs without sacct).
#   tools/slurm_up.sh            # prints "slurm up: <node> CPUs=<n>" or one line why not
set -euo pipefail

if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then
    echo "slurm up: already running ($(sinfo -h -o '%N CPUs=%c'))"
    exit 0
fi
for prog in slurmctld slurmd munged sinfo; do
    command -v "$prog" >/dev/null || { echo "slurm: $prog not installed (apt-get install slurmctld slurmd munge slurm-client)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "slurm: bringing up the daemons needs root"; exit 1; }

node="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
conf_dir=/etc/slurm
header="# single-node SLURM written by lossbound tools/slurm_up.sh"
if [ -s "$conf_dir/slurm.conf" ] && [ "$(head -1 "$conf_dir/slurm.conf")" != "$header" ]; then
    echo "slurm: $conf_dir/slurm.conf exists and was not written by this script; left alone (start SLURM yourself)"
    exit 1
fi
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > "$conf_dir/slurm.conf" <<EOF
$header
ClusterName=lossbound
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
# munge: a key, its folders owned by the munge user, the daemon as that user
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then
        echo "slurm up: $node CPUs=$cpus RealMemory=${mem_mb}MB partition debug"
        exit 0
    fi
    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm: the node did not come up in 60 s (see /var/log/slurm/slurmctld.log and slurmd.log)"
exit 1
