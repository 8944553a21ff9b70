// Who this process is in a multi-process run, and the one-time exchange of a small payload (the
// NCCL unique id) from rank 0 to every rank.
//
// Launchers: the rank, world size and local rank (which GPU of the node) come from the variables
// the usual launchers set, read in this order of precedence, the first launcher with any of its
// variables present winning (a Slurm allocation running mpirun or torchrun sets both kinds):
//   torchrun style  RANK, WORLD_SIZE, LOCAL_RANK
//   OpenMPI         OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   Slurm (srun)    SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
// None of them: a single process (rank 0 of 1). A launcher's variables must be all present, be
// integers and be consistent (0 <= rank < world size, 0 <= local rank < world size), or the
// process stops with an error naming the variables.
//
// File store (`--dist-init file:///PATH`, like torch's FileStore on a shared file system): rank 0
// writes the payload to PATH atomically (temporary file + rename, so a reader never sees half of
// it); rank r > 0 waits for PATH, reads it and acknowledges with PATH.rank<r>; rank 0 waits for
// every acknowledgement and removes PATH and the acknowledgements, so nothing is left behind for
// a later run. Every wait has a timeout whose error names the ranks that never arrived. PATH
// existing when rank 0 starts is an error (a run that died mid-exchange, or another job using
// the same path): a stale id would send the other ranks to a rendezvous that never completes.
#pragma once
#include <functional>
#include <string>

struct ProcessGroupEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string launcher = "none";  // "torchrun", "openmpi", "slurm" or "none"
  std::string describe() const;   // "rank 1 of 2 (local rank 1, from OpenMPI's OMPI_COMM_WORLD_*)"
};

// getenv is a parameter so that tests can give any environment.
using EnvLookup = std::function<const char*(const char*)>;
ProcessGroupEnv detect_process_group(const EnvLookup& getenv_fn);
ProcessGroupEnv detect_process_group();  // the process's own environment

// "file:///abs/path" -> "/abs/path"; anything else is an error naming `option` (the caller
// handles the other form, "mpi": common/mpi_store.h).
std::string parse_dist_init(const std::string& spec, const std::string& option = "--dist-init");

// Rank 0 passes `payload` and gets it back; every other rank gets rank 0's payload. Throws
// EngineError on a timeout (naming the missing ranks) or a file-system error (naming the path).
std::string file_store_exchange(const std::string& path, int rank, int world_size, const std::string& payload,
                                double timeout_s);
