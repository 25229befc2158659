#!/bin/bash
# One student on a multi-host Cloud TPU slice (e.g. v4-32: 4 VMs): the same command on
# every VM of the slice (--worker=all); jax.distributed.initialize() finds the slice's
# coordinator and each VM's index itself, and the batch is split over every chip of the
# slice. WORKDIR must be a file system every VM sees (e.g. a mounted Filestore share or
# NFS): each VM collects its share of the teacher data into it; VM 0 writes checkpoints,
# results and plots. Re-running the script resumes the run.
#
#   TPU_NAME=cpd-v4-32 ZONE=us-central2-b bash experiments/launch/tpu_distill.sh
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME (a multi-host TPU VM slice)}" "${ZONE:?set ZONE}"
CONFIG=${CONFIG:-cpd_jax/configs/mt25_5stage.py}
WORKDIR=${WORKDIR:-/mnt/shared/cpd_jax/distill}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="cd cpd_jax && \
python -m cpd_jax.main --config=$CONFIG --workdir=$WORKDIR --config.parallel.multi_host=True ${EXTRA_FLAGS:-}"
