// CUDA emulation: host versions of the device math intrinsics that the CUDA headers declare only
// for device code (checked against cuda 13's cuda_bf16.h / cuda_fp16.h under g++). The bf16/half
// functions compute in fp32 (as the device's approximate units do) and round once to nearest even;
// the fused multiply-adds round exactly once, as the device's fma does.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace emu {
// Round a double to float "to odd": truncate, and set the lowest bit when the value was inexact.
// A second rounding of the result to a narrower format (bf16, half) is then exactly the single
// rounding of the double (the classic round-to-odd argument; float keeps >= 2 extra bits).
inline float round_to_odd_float(double d) {
  float f = (float)d;
  if ((double)f == d || std::isnan(d) || std::isinf(f)) return f;
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if (std::fabs((double)f) > std::fabs(d)) bits -= 1;  // it rounded away from zero: truncate
  return std::bit_cast<float>(bits | 1u);
}
// bf16 / half products of two values are exact in double, and so is the following add unless the
// exponents are far apart, in which case the round-to-odd above still makes the result exact.
inline __nv_bfloat16 fma_bf16(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  double r = (double)__bfloat162float(a) * (double)__bfloat162float(b) + __bfloat162float(c);
  return __float2bfloat16_rn(round_to_odd_float(r));
}
inline __half fma_half(__half a, __half b, __half c) {
  double r = (double)__half2float(a) * (double)__half2float(b) + __half2float(c);
  return __float2half_rn(round_to_odd_float(r));
}
}  // namespace emu

// ---- fp32 intrinsics ----
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return (float)(1.0 / std::sqrt((double)x)); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmaf_ieee_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)std::floor(x); }
inline int __float2int_ru(float x) { return (int)std::ceil(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)std::nearbyint(x); }
inline float __double2float_rn(double x) { return (float)x; }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }

// ---- integer intrinsics ----
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero((unsigned)x); }
inline int __clzll(long long x) { return std::countl_zero((unsigned long long)x); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero((unsigned)x) + 1; }
inline int __ffsll(long long x) {
  return x == 0 ? 0 : std::countr_zero((unsigned long long)x) + 1;
}
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline int __mul24(int a, int b) { return (int)(((long long)(a << 8 >> 8)) * (b << 8 >> 8)); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return (unsigned)(((unsigned long long)a * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

// CUDA's global min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// ---- bf16 ----
#define EMU_BF16_UNARY(NAME, EXPR)                                   \
  inline __nv_bfloat16 NAME(__nv_bfloat16 h) {                       \
    float x = __bfloat162float(h);                                   \
    return __float2bfloat16_rn(EXPR);                                \
  }                                                                  \
  inline __nv_bfloat162 h2##NAME##_emu(__nv_bfloat162 h) {           \
    return __halves2bfloat162(NAME(h.x), NAME(h.y));                 \
  }
EMU_BF16_UNARY(hexp, std::exp(x))
EMU_BF16_UNARY(hexp2, std::exp2(x))
EMU_BF16_UNARY(hexp10, std::pow(10.0f, x))
EMU_BF16_UNARY(hlog, std::log(x))
EMU_BF16_UNARY(hlog2, std::log2(x))
EMU_BF16_UNARY(hlog10, std::log10(x))
EMU_BF16_UNARY(hsqrt, std::sqrt(x))
EMU_BF16_UNARY(hrsqrt, 1.0f / std::sqrt(x))
EMU_BF16_UNARY(hrcp, 1.0f / x)
EMU_BF16_UNARY(hsin, std::sin(x))
EMU_BF16_UNARY(hcos, std::cos(x))
EMU_BF16_UNARY(htanh, std::tanh(x))
EMU_BF16_UNARY(hfloor, std::floor(x))
EMU_BF16_UNARY(hceil, std::ceil(x))
EMU_BF16_UNARY(htrunc, std::trunc(x))
EMU_BF16_UNARY(hrint, std::nearbyint(x))
#undef EMU_BF16_UNARY
inline __nv_bfloat16 __hrcp(__nv_bfloat16 h) { return hrcp(h); }
inline __nv_bfloat162 h2exp(__nv_bfloat162 h) { return h2hexp_emu(h); }
inline __nv_bfloat162 h2exp2(__nv_bfloat162 h) { return h2hexp2_emu(h); }
inline __nv_bfloat162 h2log(__nv_bfloat162 h) { return h2hlog_emu(h); }
inline __nv_bfloat162 h2log2(__nv_bfloat162 h) { return h2hlog2_emu(h); }
inline __nv_bfloat162 h2sqrt(__nv_bfloat162 h) { return h2hsqrt_emu(h); }
inline __nv_bfloat162 h2rsqrt(__nv_bfloat162 h) { return h2hrsqrt_emu(h); }
inline __nv_bfloat162 h2rcp(__nv_bfloat162 h) { return h2hrcp_emu(h); }
inline __nv_bfloat162 h2sin(__nv_bfloat162 h) { return h2hsin_emu(h); }
inline __nv_bfloat162 h2cos(__nv_bfloat162 h) { return h2hcos_emu(h); }
inline __nv_bfloat162 h2tanh(__nv_bfloat162 h) { return h2htanh_emu(h); }
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return emu::fma_bf16(a, b, c);
}
inline __nv_bfloat16 __hfma_relu(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  __nv_bfloat16 r = emu::fma_bf16(a, b, c);
  float f = __bfloat162float(r);
  return f < 0.0f ? __float2bfloat16_rn(0.0f) : r;  // NaN stays NaN
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  return __halves2bfloat162(emu::fma_bf16(a.x, b.x, c.x), emu::fma_bf16(a.y, b.y, c.y));
}
inline int __bfloat162int_rn(__nv_bfloat16 h) { return (int)std::nearbyint(__bfloat162float(h)); }

// ---- half ----
#define EMU_HALF_UNARY(NAME, EXPR)                \
  inline __half NAME(__half h) {                  \
    float x = __half2float(h);                    \
    return __float2half_rn(EXPR);                 \
  }
EMU_HALF_UNARY(hexp, std::exp(x))
EMU_HALF_UNARY(hexp2, std::exp2(x))
EMU_HALF_UNARY(hlog, std::log(x))
EMU_HALF_UNARY(hlog2, std::log2(x))
EMU_HALF_UNARY(hsqrt, std::sqrt(x))
EMU_HALF_UNARY(hrsqrt, 1.0f / std::sqrt(x))
EMU_HALF_UNARY(hrcp, 1.0f / x)
EMU_HALF_UNARY(hsin, std::sin(x))
EMU_HALF_UNARY(hcos, std::cos(x))
EMU_HALF_UNARY(htanh, std::tanh(x))
EMU_HALF_UNARY(hfloor, std::floor(x))
EMU_HALF_UNARY(hceil, std::ceil(x))
EMU_HALF_UNARY(htrunc, std::trunc(x))
EMU_HALF_UNARY(hrint, std::nearbyint(x))
#undef EMU_HALF_UNARY
inline __half __hfma(__half a, __half b, __half c) { return emu::fma_half(a, b, c); }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __halves2half2(emu::fma_half(a.x, b.x, c.x), emu::fma_half(a.y, b.y, c.y));
}
