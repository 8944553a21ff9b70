// The NCCL id through MPI, for processes started by OpenMPI's mpirun: rank 0's payload goes to
// every rank with MPI_Bcast on MPI_COMM_WORLD. libmpi is loaded at run time (dlopen of OpenMPI's
// libmpi.so.40), so the engine builds and runs without MPI; OpenMPI's ABI is assumed (its
// MPI_COMM_WORLD and MPI_BYTE are the addresses of the symbols ompi_mpi_comm_world and
// ompi_mpi_byte), which is why only the OpenMPI launcher uses it.
//
// MPI is initialized on the first exchange and must be finalized by mpi_finalize() when the
// program ends normally. After an error the program exits without it: MPI_Finalize may wait for
// the other ranks, and mpirun ends the job when a rank exits with an error.
#pragma once
#include <string>

// True when OpenMPI's libmpi can be loaded (the reason why not in *why_not when given).
bool mpi_available(std::string* why_not = nullptr);

// Rank 0 passes `payload` and gets it back; every other rank gets rank 0's payload. Checks that
// MPI's rank and size are the launcher's `rank` and `world_size`. Throws EngineError on failure.
std::string mpi_exchange(int rank, int world_size, const std::string& payload);

// MPI_Finalize when mpi_exchange initialized MPI (no-op otherwise).
void mpi_finalize();
