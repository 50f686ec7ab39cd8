#!/bin/bash
# A whole study in one Slurm job: a Dask scheduler, one worker per task, and
# `katparallel run` connected to them through the scheduler file.
#
#   sbatch examples/slurm_sbatch.sh                 # from the repository, venv in .venv
#   sbatch --ntasks=32 examples/slurm_sbatch.sh     # 32 workers (on as many nodes as Slurm gives)
#
# Cancelled or out of time? Submit it again: the store resumes the study
# (STORE defaults to study.db in the submission directory, whatever the job id).
#
#SBATCH --job-name=katparallel-study
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --output=katparallel-%j.out
set -euo pipefail

PYTHON=${PYTHON:-$PWD/.venv/bin/python}        # the same Python on every node (shared file system)
MODEL=${MODEL:-examples/laser_mirror.kat}
STORE=${STORE:-study.db}
OUT=${OUT:-study.nc}
# Where the scheduler listens and the workers reach it: on a real cluster an
# interface every node shares, e.g. "--interface ib0" for InfiniBand.
SCHEDULER_ADDRESS=${SCHEDULER_ADDRESS:---interface lo}
WORKER_ADDRESS=${WORKER_ADDRESS:-$SCHEDULER_ADDRESS}
SCHEDULER_FILE=$PWD/dask-scheduler-$SLURM_JOB_ID.json

# The scheduler runs beside this script on the job's first node (no CPU of its own
# needed), on a free port: the scheduler file tells the others where.
"$PYTHON" -m distributed.cli.dask_scheduler --scheduler-file "$SCHEDULER_FILE" \
    $SCHEDULER_ADDRESS --port 0 --dashboard-address :0 &
SCHEDULER=$!
# One single-threaded worker per task; they stop well before the job's time limit
# (--lifetime), so an ending job never loses a running chunk to SIGKILL.
srun --ntasks="$SLURM_NTASKS" "$PYTHON" -m distributed.cli.dask_worker \
    --scheduler-file "$SCHEDULER_FILE" $WORKER_ADDRESS --nworkers 1 --nthreads 1 \
    --memory-limit 0 --lifetime 28m --lifetime-stagger 1m &
WORKERS=$!
# Stop both when the study ends: Slurm sites whose process tracking is not
# cgroup-based lose track of background processes once this script exits.
trap 'kill $WORKERS $SCHEDULER 2>/dev/null; wait; rm -f "$SCHEDULER_FILE"' EXIT

"$PYTHON" -m katparallel run "$MODEL" --sample "L0.P=normal(1,0.1)" -n "${DRAWS:-1000}" --seed 42 \
    --backend dask --scheduler-file "$SCHEDULER_FILE" --store "$STORE" -o "$OUT" -q
