// The offloaded AdamW (--offload-optimizer) overlapped with the next step's forward, as
// ZeRO-Offload does. The fp32 master weights and the AdamW moments are pinned host memory, the
// gradients and the bf16 working copy of the weights are on the device.
//
// After the backward and the global norm (the clipping factor must be known before any update),
// optimizer_step starts a worker thread and returns. The worker updates the parameters group by
// group in the order the next forward reads them: the embedding, layers 0 .. L-1, the final norm,
// the LM head (a tied LM head is the embedding: group 0, needed first and last). Per chunk of a
// group (at most `chunk` values), on the backend's transfer stream: the fp32 gradients down to a
// pinned buffer, then zeroed on the device (so the next step's zero_grad has nothing to do); the
// next chunk's download is issued before this chunk's AdamW, so the two overlap; the CPU AdamW op
// (kernels/cpu/adamw.cpp, OpenMP over the host cores) on the master weights and moments; the
// chunk's bf16 rounding uploaded into the working copy. After a group's last chunk the worker
// records an event on the transfer stream, waits for it (the group's uploads and zeroing are then
// done on the device) and publishes the group.
//
// Before a weight or a gradient of group g is used (LlamaModel::weight / grad, the one place every
// op call takes them from), need() waits on the host until the worker has published g. The
// compute stream's later work then needs no device-side wait (what it reads is already on the
// device), and only the worker touches the transfer stream while an update is in flight (the
// emulator's streams belong to one thread). The cost: the worker's pipeline drains at each group
// boundary, one chunk's upload (32 MB) per group. finish() waits for the whole update: the model
// calls it wherever it touches the parameters, gradients or moments otherwise
// (LlamaModel::finish_pending_update).
//
// The result is the serial step's bit for bit: the same CPU op on the same values (elementwise, so
// the chunking changes nothing) and the same bf16 rounding of the same master weights.
//
// Traffic per step and parameter: 4 B of gradients down and 2 B of bf16 weights up over PCIe; on
// the host, AdamW reads p, g, m, v and writes p, m, v (28 B), the rounding reads p and writes 2 B.
#pragma once
#include <omp.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/ops.h"  // adamw_update, the host op
#include "model/adamw.h"
#include "model/params.h"

// How optimizer_step runs the offloaded update.
//   overlapped: the worker runs ahead, the forward waits per group (the default);
//   serial:     the whole update inside optimizer_step (chunks down, AdamW, then the whole working
//               copy remade from the host): the reference the tests compare with;
//   lazy:       overlapped, but the worker starts a group only once the model asks for it, the
//               latest schedule the waits allow: a weight read that skips its wait then gets the
//               previous step's value every time, not by chance (a test switch).
// ENGINE_DEBUG_OFFLOAD=overlapped|serial|lazy in the environment chooses it for a program.
enum class OffloadSchedule { overlapped, serial, lazy };

inline OffloadSchedule offload_schedule_from_env() {
  const char* env = std::getenv("ENGINE_DEBUG_OFFLOAD");
  const std::string v = env ? env : "overlapped";
  check(v == "overlapped" || v == "serial" || v == "lazy", "ENGINE_DEBUG_OFFLOAD: expected overlapped, serial or lazy, "
        "got '", v, "'");
  return v == "serial" ? OffloadSchedule::serial : v == "lazy" ? OffloadSchedule::lazy : OffloadSchedule::overlapped;
}

template <class Backend>
class OffloadedUpdate {
 public:
  // [0, ready_end) of the flat buffer is updated and ordered before the compute stream's next
  // work (everything when no update is in flight). Read and written by the model's thread only.
  size_t ready_end = SIZE_MAX;

  // grad_buffers: pinned host memory of 2 * chunk floats.
  // weights: the model's working copy on the device, which each updated chunk is uploaded into.
  OffloadedUpdate(const ParamLayout& layout, float* params, typename Backend::weight_t* weights, float* grads, float* m,
                  float* v, float* grad_buffers, size_t chunk)
      : params_(params), weights_(weights), grads_(grads), m_(m), v_(v), buffers_(grad_buffers), chunk_(chunk),
        starts_(layout.forward_group_starts()) {
    check(starts_.front() == 0 && std::is_sorted(starts_.begin(), starts_.end()),
          "offloaded optimizer: the parameter groups are not in buffer order");
    groups_ = (int)starts_.size() - 1;
    for (int g = 0; g < groups_; g++)
      for (size_t b = starts_[g]; b < starts_[g + 1]; b += chunk_)
        chunks_.push_back({b, std::min(chunk_, starts_[g + 1] - b), g});
  }
  // The worker is only ever joined here after finish() (the model's destructor calls it); an
  // exception unwinding past a pending update lets the worker run to its end first.
  ~OffloadedUpdate() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requested_ = INT_MAX;
    }
    cv_.notify_all();
    worker_.join();
  }
  OffloadedUpdate(const OffloadedUpdate&) = delete;
  OffloadedUpdate& operator=(const OffloadedUpdate&) = delete;

  bool in_flight() const { return worker_.joinable(); }

  // Starts the update of every group with AdamW step `step` and clipping factor `scale`; the
  // gradients are complete on the compute stream (the backward and the global norm are issued).
  void start(const AdamWConfig& o, int step, float scale, bool lazy) {
    check(!in_flight(), "offloaded optimizer: a step started while the previous update is in flight");
    Backend::transfer_begin(groups_ + 2, starts_.back());  // an event per group, and one per gradient buffer
    done_ = 0;
    requested_ = 0;
    error_ = nullptr;
    lazy_ = lazy;
    threads_ = omp_get_max_threads();  // the caller's (--threads): a new thread starts from the default
    ready_end = 0;
    worker_ = std::thread([this, o, step, scale] { run(o, step, scale); });
  }

  // Waits for the group holding flat index `offset` (and so every group before it).
  void need(size_t offset) {
    if (!in_flight()) return;
    const int g = std::min<int>(groups_ - 1, int(std::upper_bound(starts_.begin(), starts_.end(), offset) -
                                                 starts_.begin()) - 1);
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mu_);
      requested_ = std::max(requested_, g + 1);
      cv_.notify_all();
      cv_.wait(lock, [&] { return done_ > g || error_; });
      if (done_ <= g) error = error_;
    }
    if (error) {
      close();
      std::rethrow_exception(error);
    }
    ready_end = starts_[g + 1];
    if (g + 1 == groups_) close();
  }
  void finish() {
    if (in_flight()) need(starts_.back() - 1);
  }

 private:
  struct Chunk {
    size_t begin, n;
    int group;
  };
  float* params_;
  typename Backend::weight_t* weights_;
  float *grads_, *m_, *v_, *buffers_;
  size_t chunk_;
  std::vector<size_t> starts_;  // group g is [starts_[g], starts_[g + 1])
  std::vector<Chunk> chunks_;
  int groups_ = 0;
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  int done_ = 0, requested_ = 0;  // groups published by the worker; groups the model asked for
  bool lazy_ = false;
  int threads_ = 1;
  std::exception_ptr error_;

  void close() {
    worker_.join();
    Backend::transfer_end();
    ready_end = SIZE_MAX;
  }

  void run(const AdamWConfig o, int step, float scale) {
    try {
      Backend::transfer_thread();
      omp_set_num_threads(threads_);
      const int down = groups_;  // events down + 0, down + 1: the two gradient buffers' downloads
      auto issue_download = [&](size_t k) {
        const Chunk& c = chunks_[k];
        Backend::download_async(buffers_ + (k % 2) * chunk_, grads_ + c.begin, c.n);
        Backend::zero_async(grads_ + c.begin, c.n);
        Backend::transfer_record(down + int(k % 2));
      };
      if (!chunks_.empty()) issue_download(0);
      for (size_t k = 0; k < chunks_.size(); k++) {
        const Chunk& c = chunks_[k];
        if (lazy_ && (k == 0 || chunks_[k - 1].group != c.group)) {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return requested_ > c.group; });
        }
        if (k + 1 < chunks_.size()) issue_download(k + 1);  // its buffer's last chunk (k - 1) is done
        Backend::transfer_wait(down + int(k % 2));
        ::adamw_update(params_ + c.begin, buffers_ + (k % 2) * chunk_, m_ + c.begin, v_ + c.begin, c.n, o.lr, o.beta1,
                       o.beta2, o.eps, o.weight_decay, step, scale);
        Backend::upload_weights_async(weights_ + c.begin, params_ + c.begin, c.n);
        if (k + 1 == chunks_.size() || chunks_[k + 1].group != c.group) {
          Backend::transfer_record(c.group);
          Backend::transfer_wait(c.group);
          std::lock_guard<std::mutex> lock(mu_);
          done_ = c.group + 1;
          cv_.notify_all();
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
    }
  }
};
