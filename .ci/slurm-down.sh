#!/usr/bin/env bash
# Stop the one-node cluster `.ci/slurm-up.sh` started (by the pids its daemons wrote).
set -u
for pid_file in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
    [ -s "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null
done
pkill -x munged 2>/dev/null
exit 0
