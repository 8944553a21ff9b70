// LarimarTrainer on the CUDA backend (train_llama --larimar --device cuda). Compiled by g++ like
// train_llama.cu, into the CUDA programs only (the nvcc build's train_llama, and the emulator's
// train_llama_emu): the larimar/ archive is linked into CPU-only programs too, which have no CUDA
// backend. The encoder and the decoder each run on the device, the backend serving one model's
// weights at a time (LarimarModel binds each before its passes); the memory math and the small
// host parameters (M0, the logvar and code maps) stay on the host in float64/float32, as on the CPU.
#include "kernels/cuda_backend.h"
#include "larimar/train_impl.h"

namespace larimar {
template class LarimarTrainer<CudaBackend>;
}  // namespace larimar
