#include "common/mpi_store.h"

#include <dlfcn.h>

#include <cstdint>

#include "common/error.h"

namespace {

// The few entry points used, with OpenMPI's types reduced to pointers (MPI_Comm and MPI_Datatype
// are pointers to opaque structs in OpenMPI).
struct Mpi {
  void* lib = nullptr;
  std::string error;
  int (*init)(int*, char***) = nullptr;
  int (*initialized)(int*) = nullptr;
  int (*finalize)() = nullptr;
  int (*comm_rank)(void*, int*) = nullptr;
  int (*comm_size)(void*, int*) = nullptr;
  int (*bcast)(void*, int, void*, int, void*) = nullptr;
  void* comm_world = nullptr;
  void* byte = nullptr;
};
bool g_we_initialized = false;  // MPI_Init was ours: mpi_finalize calls MPI_Finalize

Mpi& mpi() {
  static Mpi m = [] {
    Mpi t;
    for (const char* name : {"libmpi.so.40", "libmpi.so"}) {
      t.lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);  // global: OpenMPI's plugins resolve against it
      if (t.lib) break;
      t.error += std::string(t.error.empty() ? "" : "; ") + dlerror();
    }
    if (!t.lib) return t;
    auto sym = [&](const char* name) {
      void* p = dlsym(t.lib, name);
      if (!p && t.error.empty()) t.error = std::string("libmpi has no ") + name + " (not OpenMPI?)";
      return p;
    };
    t.init = reinterpret_cast<decltype(t.init)>(sym("MPI_Init"));
    t.initialized = reinterpret_cast<decltype(t.initialized)>(sym("MPI_Initialized"));
    t.finalize = reinterpret_cast<decltype(t.finalize)>(sym("MPI_Finalize"));
    t.comm_rank = reinterpret_cast<decltype(t.comm_rank)>(sym("MPI_Comm_rank"));
    t.comm_size = reinterpret_cast<decltype(t.comm_size)>(sym("MPI_Comm_size"));
    t.bcast = reinterpret_cast<decltype(t.bcast)>(sym("MPI_Bcast"));
    t.comm_world = sym("ompi_mpi_comm_world");
    t.byte = sym("ompi_mpi_byte");
    if (!t.error.empty()) t.lib = nullptr;
    return t;
  }();
  return m;
}

void mpi_check(int rc, const char* what) { check(rc == 0, "MPI: ", what, " failed (error code ", rc, ")"); }

}  // namespace

bool mpi_available(std::string* why_not) {
  Mpi& m = mpi();
  if (!m.lib && why_not) *why_not = "cannot load OpenMPI's libmpi.so.40 (" + m.error + ")";
  return m.lib != nullptr;
}

std::string mpi_exchange(int rank, int world_size, const std::string& payload) {
  std::string why;
  check(mpi_available(&why), "--dist-init mpi: ", why, "; install OpenMPI (libopenmpi3) or give --dist-init file:///PATH");
  Mpi& m = mpi();
  int done = 0;
  mpi_check(m.initialized(&done), "MPI_Initialized");
  if (!done) {
    mpi_check(m.init(nullptr, nullptr), "MPI_Init");
    g_we_initialized = true;
  }
  int r = -1, n = 0;
  mpi_check(m.comm_rank(m.comm_world, &r), "MPI_Comm_rank");
  mpi_check(m.comm_size(m.comm_world, &n), "MPI_Comm_size");
  check(r == rank && n == world_size, "MPI: this process is rank ", r, " of ", n, " in MPI_COMM_WORLD but rank ", rank,
        " of ", world_size, " for the launcher's variables (a torchrun or Slurm variable set inside mpirun?)");
  uint64_t size = rank == 0 ? payload.size() : 0;
  mpi_check(m.bcast(&size, sizeof size, m.byte, 0, m.comm_world), "MPI_Bcast (size)");
  check(size <= (1u << 20), "MPI: rank 0 sent a payload of ", size, " bytes (more than 1 MiB)");
  std::string got = rank == 0 ? payload : std::string(size, '\0');
  if (size > 0) mpi_check(m.bcast(got.data(), (int)size, m.byte, 0, m.comm_world), "MPI_Bcast (payload)");
  return got;
}

void mpi_finalize() {
  if (!g_we_initialized) return;  // never loads libmpi by itself
  g_we_initialized = false;
  mpi().finalize();
}
