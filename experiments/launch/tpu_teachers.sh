#!/bin/bash
# PPO teachers on Cloud TPU VMs, the TPU analogue of slurm_teachers.sbatch: one
# single-host TPU VM per share of the tasks, the same command on each with its index
# (`parallel.process_identity`); each VM trains every len(TPU_NAMES)-th task
# (`parallel.process_share`). Teachers share no array, so the VMs never form one JAX
# cluster. WORKDIR must be a file system every VM sees (e.g. a mounted bucket or NFS);
# re-running the script resumes every unfinished task.
#
#   TPU_NAMES="teachers-0 teachers-1 teachers-2" ZONE=us-central2-b bash experiments/launch/tpu_teachers.sh
set -euo pipefail
: "${TPU_NAMES:?set TPU_NAMES (space-separated single-host TPU VM names)}" "${ZONE:?set ZONE}"
WORKDIR=${WORKDIR:-/mnt/shared/cpd_jax/teachers}
read -ra VMS <<< "$TPU_NAMES"
for i in "${!VMS[@]}"; do
  gcloud compute tpus tpu-vm ssh "${VMS[$i]}" --zone="$ZONE" --worker=0 --command="cd cpd_jax && \
python -m cpd_jax.main --config=cpd_jax/configs/teachers_ppo.py --workdir=$WORKDIR --config.parallel.multi_host=True --config.parallel.num_processes=${#VMS[@]} --config.parallel.process_id=$i" &
done
wait
