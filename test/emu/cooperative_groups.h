// CUDA emulation: the subset of cooperative_groups the project uses (this_thread_block,
// tiled_partition<N> for N <= 32, reduce with plus / less / greater, sync, tile shuffles and votes).
// Tile operations are warp operations on the tile's lanes, so they carry the same mask checks.
#pragma once
// The real headers' include guards: a later #include <cooperative_groups.h> (or reduce.h) in a
// kernel file is then a no-op instead of a clash with this emulation.
#define _COOPERATIVE_GROUPS_H_
#define _COOPERATIVE_GROUPS_REDUCE_H

namespace cooperative_groups {

class thread_block {
 public:
  void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
    emu::syncthreads(file, line);
  }
  static unsigned long long thread_rank() {
    const dim3& b = ::emu::tl_block_dim;
    const uint3& t = ::emu::tl_thread_idx;
    return t.x + (unsigned long long)b.x * (t.y + (unsigned long long)b.y * t.z);
  }
  static unsigned long long size() { return num_threads(); }
  static unsigned long long num_threads() {
    const dim3& b = ::emu::tl_block_dim;
    return (unsigned long long)b.x * b.y * b.z;
  }
  static dim3 group_index() { return dim3(::emu::tl_block_idx); }
  static dim3 thread_index() { return dim3(::emu::tl_thread_idx); }
  static dim3 group_dim() { return ::emu::tl_block_dim; }
  static dim3 dim_threads() { return ::emu::tl_block_dim; }
};

inline thread_block this_thread_block() { return thread_block(); }
inline void sync(const thread_block& g, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  g.sync(file, line);
}

// A tile of N consecutive threads (N a power of two, at most a warp), as in
// cg::tiled_partition<N>(cg::this_thread_block()).
template <unsigned N>
class thread_block_tile {
  static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0,
                "emulated tiled_partition<N> supports powers of two up to 32");

 public:
  static unsigned long long linear_rank() { return thread_block::thread_rank(); }
  static unsigned lane() { return (unsigned)(linear_rank() % 32); }
  // The warp lanes of this tile, as the mask of the *_sync intrinsics.
  static unsigned mask() {
    unsigned tile_bits = N == 32 ? 0xffffffffu : ((1u << N) - 1u);
    return tile_bits << (lane() / N * N);
  }
  static unsigned long long thread_rank() { return linear_rank() % N; }
  static unsigned long long size() { return N; }
  static unsigned long long num_threads() { return N; }
  static unsigned long long meta_group_rank() { return linear_rank() / N; }
  static unsigned long long meta_group_size() {
    return (thread_block::num_threads() + N - 1) / N;
  }
  void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
    emu::warp_op(emu::WarpOp::sync, mask(), 0, 0, (int)N, file, line);
  }
  template <class T>
  T shfl(T v, int src_rank, const char* file = __builtin_FILE(),
         int line = __builtin_LINE()) const {
    return __shfl_sync(mask(), v, src_rank, (int)N, file, line);
  }
  template <class T>
  T shfl_down(T v, unsigned delta, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) const {
    return __shfl_down_sync(mask(), v, delta, (int)N, file, line);
  }
  template <class T>
  T shfl_up(T v, unsigned delta, const char* file = __builtin_FILE(),
            int line = __builtin_LINE()) const {
    return __shfl_up_sync(mask(), v, delta, (int)N, file, line);
  }
  template <class T>
  T shfl_xor(T v, unsigned lane_mask, const char* file = __builtin_FILE(),
             int line = __builtin_LINE()) const {
    return __shfl_xor_sync(mask(), v, (int)lane_mask, (int)N, file, line);
  }
  // Votes return bits / results for the tile's lanes only (ballot bit i = tile rank i).
  unsigned ballot(int predicate, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) const {
    return __ballot_sync(mask(), predicate, file, line) >> (lane() / N * N);
  }
  int any(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
    return __any_sync(mask(), predicate, file, line);
  }
  int all(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
    return __all_sync(mask(), predicate, file, line);
  }
};

template <unsigned N, class ParentGroup>
inline thread_block_tile<N> tiled_partition(const ParentGroup&) {
  return thread_block_tile<N>();
}
template <unsigned N>
inline void sync(const thread_block_tile<N>& g, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  g.sync(file, line);
}

// Reduction operators of <cooperative_groups/reduce.h>: greater gives the maximum, less the
// minimum.
template <class T>
struct plus {
  T operator()(const T& a, const T& b) const { return a + b; }
};
template <class T>
struct less {
  T operator()(const T& a, const T& b) const { return b < a ? b : a; }
};
template <class T>
struct greater {
  T operator()(const T& a, const T& b) const { return a < b ? b : a; }
};
template <class T>
struct bit_and {
  T operator()(const T& a, const T& b) const { return a & b; }
};
template <class T>
struct bit_or {
  T operator()(const T& a, const T& b) const { return a | b; }
};
template <class T>
struct bit_xor {
  T operator()(const T& a, const T& b) const { return a ^ b; }
};

// Butterfly reduction: after log2(N) xor-shuffles every lane of the tile holds op over the tile.
template <unsigned N, class T, class Op>
inline T reduce(const thread_block_tile<N>& tile, T value, Op op,
                const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  for (unsigned offset = N / 2; offset > 0; offset /= 2)
    value = op(value, tile.shfl_xor(value, offset, file, line));
  return value;
}

}  // namespace cooperative_groups
