// CUDA emulation: the nvcuda::wmma collectives (test/emu/wmma.h). A collective is a warp operation
// with the full mask whose completion (when the 32th lane arrives, all others suspended with their
// operands on their stacks) moves whole matrices between memory and the lanes' fragments through
// the emulator's layout tables, or multiplies them.
#include <cstdlib>
#include <random>
#include <sstream>

#include "test/emu/emu_internal.h"

namespace emu {

namespace {

struct Layouts {
  uint64_t seed = 0;
  uint8_t slot[(int)WmmaKind::count][256];
  // Each kind gets its own seeded permutation of the 256 (lane, i) slots: no two kinds agree, and
  // no kind is the row-major "lane = element / 8" mapping that naive code would assume.
  void generate(uint64_t s) {
    seed = s;
    for (int k = 0; k < (int)WmmaKind::count; k++) {
      std::mt19937_64 rng(s * 0x9E3779B97F4A7C15ull + 0x5EED + k);
      uint8_t* t = slot[k];
      for (int e = 0; e < 256; e++) t[e] = (uint8_t)e;
      do {
        std::shuffle(t, t + 256, rng);
      } while (t[0] == 0 && t[1] == 1);  // (vanishingly rare) keep away from the identity's start
    }
  }
};

Layouts& layouts() {
  static Layouts l = [] {
    Layouts x;
    const char* s = std::getenv("EMU_WMMA_LAYOUT");
    x.generate(s ? std::strtoull(s, nullptr, 10) : 1);
    return x;
  }();
  return l;
}

float to_float(const void* p, int elem, size_t i) {
  switch (elem) {
    case 0: return static_cast<const float*>(p)[i];
    case 1: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return __half2float(static_cast<const __half*>(p)[i]);
  }
}
void from_float(void* p, int elem, size_t i, float v) {
  switch (elem) {
    case 0: static_cast<float*>(p)[i] = v; break;
    case 1: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
    default: static_cast<__half*>(p)[i] = __float2half(v); break;
  }
}
// Copies between memory and fragments are bit-exact (the element type is the same on both sides).
void copy_elem(void* dst, size_t di, const void* src, size_t si, int elem) {
  const size_t bytes = elem == 0 ? 4 : 2;
  std::memcpy(static_cast<char*>(dst) + di * bytes, static_cast<const char*>(src) + si * bytes, bytes);
}

const char* elem_name(int elem) { return elem == 0 ? "float" : elem == 1 ? "__nv_bfloat16" : "__half"; }

}  // namespace

const uint8_t* wmma_layout(WmmaKind kind) { return layouts().slot[(int)kind]; }
void set_wmma_layout(uint64_t seed) { layouts().generate(seed); }
uint64_t wmma_layout_seed() { return layouts().seed; }

void wmma_collective(WarpOp op, WmmaCall& call, const char* file, int line) {
  warp_op(op, 0xffffffffu, (uint64_t)(uintptr_t)&call, 0, 32, file, line);
}

std::string wmma_complete(WarpOp op, const WmmaCall* const lanes[32]) {
  const WmmaCall& c0 = *lanes[0];
  if (op == WarpOp::wmma_mma) {
    for (int l = 1; l < 32; l++)
      if (lanes[l]->elem != c0.elem || lanes[l]->a_kind != c0.a_kind || lanes[l]->b_kind != c0.b_kind)
        return "lane " + std::to_string(l) + " multiplies fragments of other types than lane 0";
    // Gather A, B, C from the lanes through their layouts, multiply, scatter D (all reads happen
    // before any write, so d may alias a, b or c).
    float A[256], B[256], C[256], D[256];
    const uint8_t *la = wmma_layout(c0.a_kind), *lb = wmma_layout(c0.b_kind), *lc = wmma_layout(WmmaKind::acc);
    for (int e = 0; e < 256; e++) {
      A[e] = to_float(lanes[la[e] / 8]->a, c0.elem, la[e] % 8);
      B[e] = to_float(lanes[lb[e] / 8]->b, c0.elem, lb[e] % 8);
      C[e] = to_float(lanes[lc[e] / 8]->c, 0, lc[e] % 8);
    }
    for (int m = 0; m < 16; m++)
      for (int n = 0; n < 16; n++) {
        float acc = C[m * 16 + n];
        for (int k = 0; k < 16; k++) acc = std::fma(A[m * 16 + k], B[k * 16 + n], acc);
        D[m * 16 + n] = acc;
      }
    for (int e = 0; e < 256; e++) from_float(lanes[lc[e] / 8]->d, 0, lc[e] % 8, D[e]);
    return "";
  }
  // load / store: the documented requirements, then the element moves.
  for (int l = 1; l < 32; l++) {
    const WmmaCall& c = *lanes[l];
    if (c.mem != c0.mem || c.ldm != c0.ldm || c.mem_col_major != c0.mem_col_major || c.kind != c0.kind ||
        c.elem != c0.elem) {
      std::ostringstream s;
      s << "lane " << l << " passes pointer " << c.mem << ", ldm " << c.ldm << ", "
        << (c.mem_col_major ? "col" : "row") << "-major but lane 0 passes " << c0.mem << ", ldm " << c0.ldm << ", "
        << (c0.mem_col_major ? "col" : "row") << "-major (all lanes must pass the same)";
      return s.str();
    }
  }
  if ((uintptr_t)c0.mem % 32 != 0) {
    std::ostringstream s;
    s << "pointer " << c0.mem << " is not 256-bit (32-byte) aligned";
    return s.str();
  }
  const unsigned ldm_multiple = c0.elem == 0 ? 4 : 8;
  if (c0.ldm < 16 || c0.ldm % ldm_multiple != 0)
    return "ldm " + std::to_string(c0.ldm) + " must be >= 16 and a multiple of " + std::to_string(ldm_multiple) +
           " for " + elem_name(c0.elem) + " elements";
  const uint8_t* slot = wmma_layout(c0.kind);
  for (int e = 0; e < 256; e++) {
    const int row = e / 16, col = e % 16;
    const size_t at = c0.mem_col_major ? (size_t)col * c0.ldm + row : (size_t)row * c0.ldm + col;
    void* frag = lanes[slot[e] / 8]->frag;
    if (op == WarpOp::wmma_load)
      copy_elem(frag, slot[e] % 8, c0.mem, at, c0.elem);
    else
      copy_elem(const_cast<void*>(c0.mem), at, frag, slot[e] % 8, c0.elem);
  }
  return "";
}

}  // namespace emu
