// CUDA emulation: the warp matrix functions of <mma.h> (nvcuda::wmma) for the m16n16k16 shape with
// bf16 or fp16 operands and fp32 accumulators, as collectives over the emulated warp.
//
// Documented semantics kept (CUDA C++ Programming Guide, "Warp Matrix Functions"):
//   - load_matrix_sync, store_matrix_sync and mma_sync are warp-synchronous: all 32 lanes of the
//     warp must reach the same call (a lane that exited, waits elsewhere, or a warp shorter than 32
//     threads is a KernelError), with the same pointer, ldm and layout;
//   - the pointer must be 256-bit (32-byte) aligned and ldm a multiple of 8 elements for 16-bit
//     types, of 4 for float (16 bytes);
//   - the mapping of matrix elements to fragment elements x[i] is UNSPECIFIED. The emulator uses a
//     pseudo-random bijection (row, col) -> (lane, i), different for matrix_a/matrix_b in each
//     memory layout and for accumulators, chosen by a seed (EMU_WMMA_LAYOUT, emu::set_wmma_layout),
//     so a kernel that reads or writes x[i] as if it knew the layout (or moves elements between
//     fragments of different kinds) computes garbage under the emulator. Element-wise operations
//     that treat every x[i] alike (scaling, fill_fragment) are layout-independent and allowed.
// Numerics: D = A B + C with the products of bf16/fp16 operands exact in fp32 and the sum
// accumulated in fp32 (k = 0..15 in order, starting from C). The hardware's summation order is
// also unspecified; kernels must not depend on it beyond fp32 rounding.
// The shapes 32x8x16 / 8x32x16, tf32, integer and sub-byte fragments are not emulated (a
// static_assert says so).
#pragma once
#include <cstdint>
#include <type_traits>

namespace emu {

// The five fragment kinds whose layouts differ.
enum class WmmaKind : int { a_row = 0, a_col, b_row, b_col, acc, count };
// Layout of one kind: slot[row * 16 + col] = lane * 8 + i (a bijection of 0..255).
const uint8_t* wmma_layout(WmmaKind kind);
// Chooses the layouts (host only, between launches). The default seed is 1 or EMU_WMMA_LAYOUT.
void set_wmma_layout(uint64_t seed);
uint64_t wmma_layout_seed();

// One lane's operands of a collective (passed by address through warp_op).
struct WmmaCall {
  WmmaKind kind = WmmaKind::acc;  // load/store: the fragment's kind; mma: unused
  int elem = 0;                   // element type of the memory / the a, b operands: 0 float, 1 bf16, 2 fp16
  void* frag = nullptr;           // load/store: the lane's fragment x[]
  const void* mem = nullptr;      // load: source; store: destination
  unsigned ldm = 0;
  int mem_col_major = 0;
  const void* a = nullptr;        // mma
  const void* b = nullptr;
  const void* c = nullptr;
  void* d = nullptr;
  WmmaKind a_kind = WmmaKind::a_row, b_kind = WmmaKind::b_row;
};
// Runs a collective: warp_op with the full mask, completed by wmma_complete when all 32 lanes wait.
void wmma_collective(WarpOp op, WmmaCall& call, const char* file, int line);
// The work of a completed collective over the 32 lanes' calls; "" or an error message.
std::string wmma_complete(WarpOp op, const WmmaCall* const lanes[32]);

}  // namespace emu

// The real header's include guard: a kernel's #include <mma.h> is then a no-op here.
#define __CUDA_MMA_H__

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace emu_detail {
template <class T>
constexpr int elem_code() {
  if constexpr (std::is_same_v<T, float>) return 0;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return 1;
  else if constexpr (std::is_same_v<T, __half>) return 2;
  else return -1;
}
template <class Use, class Layout>
constexpr emu::WmmaKind kind_of() {
  if constexpr (std::is_same_v<Use, accumulator>) return emu::WmmaKind::acc;
  else if constexpr (std::is_same_v<Use, matrix_a>)
    return std::is_same_v<Layout, row_major> ? emu::WmmaKind::a_row : emu::WmmaKind::a_col;
  else return std::is_same_v<Layout, row_major> ? emu::WmmaKind::b_row : emu::WmmaKind::b_col;
}
}  // namespace emu_detail

template <class Use, int m, int n, int k, class T, class Layout = void>
class fragment {
  static_assert(m == 16 && n == 16 && k == 16, "the emulated WMMA supports the m16n16k16 shape only");
  static_assert(std::is_same_v<Use, matrix_a> || std::is_same_v<Use, matrix_b> ||
                    std::is_same_v<Use, accumulator>,
                "fragment use must be matrix_a, matrix_b or accumulator");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float>
                                                 : (emu_detail::elem_code<T>() == 1 || emu_detail::elem_code<T>() == 2),
                "the emulated WMMA supports bf16/fp16 matrix_a/matrix_b and float accumulators");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<Layout, void>
                                                 : (std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>),
                "matrix_a/matrix_b fragments take row_major or col_major; accumulators take the layout at load/store");

 public:
  enum { num_elements = 8, num_storage_elements = 8 };
  using element_type = T;
  using storage_element_type = T;
  T x[8];
};

template <class Use, class T, class Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, const std::type_identity_t<T>& v) {
  for (int i = 0; i < 8; i++) f.x[i] = v;
}

template <class Use, class T, class Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const std::type_identity_t<T>* p, unsigned ldm,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
  emu::WmmaCall call;
  call.kind = emu_detail::kind_of<Use, Layout>();
  call.elem = emu_detail::elem_code<T>();
  call.frag = f.x;
  call.mem = p;
  call.ldm = ldm;
  call.mem_col_major = std::is_same_v<Layout, col_major>;
  emu::wmma_collective(emu::WarpOp::wmma_load, call, file, line);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t layout,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emu::WmmaCall call;
  call.kind = emu::WmmaKind::acc;
  call.elem = 0;
  call.frag = f.x;
  call.mem = p;
  call.ldm = ldm;
  call.mem_col_major = layout == mem_col_major;
  emu::wmma_collective(emu::WarpOp::wmma_load, call, file, line);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emu::WmmaCall call;
  call.kind = emu::WmmaKind::acc;
  call.elem = 0;
  call.frag = const_cast<float*>(f.x);
  call.mem = p;
  call.ldm = ldm;
  call.mem_col_major = layout == mem_col_major;
  emu::wmma_collective(emu::WarpOp::wmma_store, call, file, line);
}
template <class T, class LayoutA, class LayoutB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LayoutA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LayoutB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  emu::WmmaCall call;
  call.elem = emu_detail::elem_code<T>();
  call.a = a.x;
  call.b = b.x;
  call.c = c.x;
  call.d = d.x;
  call.a_kind = emu_detail::kind_of<matrix_a, LayoutA>();
  call.b_kind = emu_detail::kind_of<matrix_b, LayoutB>();
  emu::wmma_collective(emu::WarpOp::wmma_mma, call, file, line);
}

}  // namespace wmma
}  // namespace nvcuda
