# Sourced by the GPU recipes (gpu_remix.sh, remix_stage1.sh, remix_stage2.sh): how train_llama is
# started as NPROC processes, one per GPU of this node (docs/distributed.md).
#
#   launcher_setup LAUNCHER NPROC STORE
# sets the arrays LAUNCH (the command prefix) and DIST (train_llama's rendezvous options):
#   none      one process (NPROC must be 1)
#   mpirun    mpirun -np NPROC; the NCCL id goes through MPI (OpenMPI)
#   srun      srun --ntasks=NPROC --ntasks-per-node=NPROC --gpus-per-task=1 --kill-on-bad-exit=1,
#             the id through the file STORE (it must be on a file system every rank sees)
#   torchrun  torchrun --standalone --nproc-per-node=NPROC --no-python, the id through STORE
# STORE is removed first: it can only be left by a run of this recipe that died while starting.
launcher_setup() {
  local launcher="$1" nproc="$2" store="$3"
  LAUNCH=(); DIST=()
  case "$nproc" in ''|*[!0-9]*|0) echo "error: --nproc '$nproc' must be a positive integer" >&2; return 2 ;; esac
  case "$launcher" in
    none) [ "$nproc" = 1 ] || { echo "error: --nproc $nproc needs --launcher mpirun, srun or torchrun" >&2; return 2; } ;;
    mpirun) LAUNCH=(mpirun -np "$nproc") ;;
    srun) LAUNCH=(srun --ntasks="$nproc" --ntasks-per-node="$nproc" --gpus-per-task=1 --kill-on-bad-exit=1) ;;
    torchrun) LAUNCH=(torchrun --standalone --nproc-per-node="$nproc" --no-python) ;;
    *) echo "error: --launcher '$launcher' must be none, mpirun, srun or torchrun" >&2; return 2 ;;
  esac
  if [ -n "$store" ] && { [ "$launcher" = srun ] || [ "$launcher" = torchrun ]; }; then
    case "$store" in /*) ;; *) store="$(pwd)/$store" ;; esac
    rm -f "$store"
    DIST=(--dist-init "file://$store")
  fi
}
