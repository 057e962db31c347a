#!/usr/bin/env bash
# A one-node SLURM cluster (munge, MariaDB for accounting, slurmdbd, slurmctld, slurmd) whose state,
# sockets, ports and logs all live under one folder, so it never touches a system-wide SLURM.
#
#   tests/cluster/slurm.sh start DIR   install what is missing (apt-get, as root), start the daemons,
#                                      write DIR/env (source it: SLURM_CONF for sbatch, sacct, squeue)
#   tests/cluster/slurm.sh stop DIR    stop every daemon started under DIR (safe to call twice)
#
# `start` exits 77 with one line "SKIP: <what is missing>" when this machine cannot run the daemons
# (not root, packages not installable, a daemon that will not come up), and stops what it started.
set -euo pipefail
[[ ${SLURM_SH_TRACE:-} ]] && set -x

cmd=${1:?usage: slurm.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: slurm.sh start|stop DIR}" && cd "$2" && pwd)
cluster=lmfeatures
ctld_port=16817 slurmd_port=16818 dbd_port=16819 db_port=16820

stop() {
    local daemon pid jobs
    if [[ -f $dir/etc/slurm.conf ]] && kill -0 "$(cat "$dir/run/slurmctld.pid" 2>/dev/null)" 2>/dev/null; then
        # jobs first: their steps outlive slurmd
        jobs=$(SLURM_CONF=$dir/etc/slurm.conf squeue -h -o %i 2>/dev/null || true)
        if [[ $jobs ]]; then
            SLURM_CONF=$dir/etc/slurm.conf scancel --full $jobs || true
            for _ in $(seq 50); do
                [[ -z $(SLURM_CONF=$dir/etc/slurm.conf squeue -h -o %i 2>/dev/null) ]] && break
                sleep 0.2
            done
        fi
    fi
    for daemon in slurmd slurmctld slurmdbd mariadb munged; do
        pid=$(cat "$dir/run/$daemon.pid" 2>/dev/null) || continue
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/run/$daemon.pid"
    done
}

skip() {
    echo "SKIP: $*"
    stop
    exit 77
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    skip "$what did not come up within ${seconds}s (logs in $dir/log)"
}

if [[ $cmd == stop ]]; then
    stop
    exit 0
fi
[[ $cmd == start ]] || { echo "usage: slurm.sh start|stop DIR" >&2; exit 2; }

# --- packages -------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-client sacct:slurm-client \
    slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
    command -v "${pair%%:*}" >/dev/null || PATH=$PATH:/usr/sbin command -v "${pair%%:*}" >/dev/null \
        || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || skip "not root, so cannot install ${need[*]}"
    command -v apt-get >/dev/null || skip "no apt-get to install ${need[*]}"
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    echo "installing ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >"$dir/apt.log" 2>&1 \
        || skip "apt-get could not install ${need[*]} (see $dir/apt.log)"
fi
export PATH=$PATH:/usr/sbin
[[ $(id -u) == 0 ]] || skip "not root: slurmd must run as root to start jobs"

for port in $ctld_port $slurmd_port $dbd_port $db_port; do
    # a cluster left running by a killed test holds them: `slurm.sh stop` its folder
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && skip "port $port is in use (another test cluster still running?)"
done
mkdir -p "$dir"/{etc,run,log,munge,db,ctld,slurmd}
cpus=$(nproc)
mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))
auth="AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket"

# --- munge ----------------------------------------------------------------------------------
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
chmod 711 "$dir/munge"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" \
    || skip "munged would not start (see $dir/log/munged.log)"
wait_for 10 munged munge --socket="$dir/munge/munge.socket" -n

# --- MariaDB (slurmdbd's store, for sacct) ---------------------------------------------------
mariadb-install-db --no-defaults --user=root --datadir="$dir/db" --auth-root-authentication-method=socket \
    >"$dir/log/mariadb-install.log" 2>&1 || skip "mariadb-install-db failed (see $dir/log/mariadb-install.log)"
mariadbd --no-defaults --user=root --datadir="$dir/db" --socket="$dir/run/mariadb.sock" \
    --port=$db_port --bind-address=127.0.0.1 --pid-file="$dir/run/mariadb.pid" \
    --log-error="$dir/log/mariadb.log" &
wait_for 60 MariaDB mariadb --no-defaults --socket="$dir/run/mariadb.sock" -uroot -e "select 1"
mariadb --no-defaults --socket="$dir/run/mariadb.sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# --- SLURM ----------------------------------------------------------------------------------
cat >"$dir/etc/slurmdbd.conf" <<EOF
$auth
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$dir/etc/slurmdbd.conf"
cat >"$dir/etc/slurm.conf" <<EOF
ClusterName=$cluster
SlurmctldHost=localhost
SlurmUser=root
$auth
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
AccountingStoragePass=$dir/munge/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
AccountingStoreFlags=job_comment
MinJobAge=300
NodeName=localhost CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/etc/slurm.conf
# The plugin's job step drops every SLURM_* variable before its inner srun, SLURM_CONF included, so the
# client commands are shims that carry it (sbatch exports PATH into the job) rather than a file in /etc.
mkdir -p "$dir/bin"
for client in sbatch srun scancel squeue sacct sacctmgr sinfo scontrol sshare; do
    printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v $client)" >"$dir/bin/$client"
    chmod +x "$dir/bin/$client"
done
echo "export SLURM_CONF=$SLURM_CONF PATH=$dir/bin:\$PATH:/usr/sbin" >"$dir/env"

slurmdbd || skip "slurmdbd would not start (see $dir/log/slurmdbd.log)"
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster $cluster >/dev/null || true
sacctmgr -i add account $cluster Description=tests Organization=tests >/dev/null || true
sacctmgr -i add user "$(id -un)" Account=$cluster >/dev/null || true
slurmctld || skip "slurmctld would not start (see $dir/log/slurmctld.log)"
wait_for 30 slurmctld scontrol ping
slurmd -N localhost || skip "slurmd would not start (see $dir/log/slurmd.log)"
wait_for 30 "the node" bash -c 'sinfo -h -N -o %T | grep -qE "^(idle|mixed|allocated)"'
echo "SLURM up: $cpus CPUs, $mem_mb MB, partition debug, account $cluster; source $dir/env"
