// Private helpers of the CPU kernels: storage-dtype traits (load/store through the conversions of
// kernels/common/numeric.h) and OpenMP thread-count resolution.
#pragma once

#include <omp.h>

#include <cmath>
#include <cstdint>

// Vector variants of the libm functions numeric.h uses (glibc's libmvec, >= 2.35 for erff and
// tanhf): declaring them `omp declare simd` lets the compiler vectorise loops over GeluErf,
// GeluTanh, Silu and expf (4-7x on this machine) without -ffast-math, which glibc otherwise
// requires to expose them. Needs -fno-math-errno and linking libmvec (kernels/CMakeLists.txt).
#if defined(ARCHI_KERNELS_HAVE_LIBMVEC) && defined(__x86_64__) && !defined(__FAST_MATH__)
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
float erff(float) noexcept;
#pragma omp declare simd notinbranch
float tanhf(float) noexcept;
}
#endif

#include "kernels/common/numeric.h"
#include "runtime/core/tensor.h"

namespace archi::kernels::cpu {

// Storage types: T is the element type in memory; Load/Store convert to/from f32.
struct F32 {
  using T = float;
  static float Load(T v) { return v; }
  static T Store(float v) { return v; }
};
struct F16 {
  using T = uint16_t;
  static float Load(T v) { return HalfToFloat(v); }
  static T Store(float v) { return FloatToHalf(v); }
};
struct BF16 {
  using T = uint16_t;
  static float Load(T v) { return Bf16ToFloat(v); }
  static T Store(float v) { return FloatToBf16(v); }
};

// Calls f.template operator()<S>() with S the storage traits of a floating dtype.
template <typename F>
void DispatchFloat(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF16:
      f.template operator()<F16>();
      break;
    case DType::kBF16:
      f.template operator()<BF16>();
      break;
    default:
      f.template operator()<F32>();
      break;
  }
}

// Threads for a parallel region: ctx value, or the OpenMP default when 0; never more than the
// number of independent work items, and 1 when the work is too small to pay for a fork.
inline int Threads(int requested, int64_t items = INT64_MAX, int64_t work = INT64_MAX) {
  int nt = requested > 0 ? requested : omp_get_max_threads();
  if (items < nt) nt = static_cast<int>(items < 1 ? 1 : items);
  if (work < 32768) nt = 1;
  return nt;
}

}  // namespace archi::kernels::cpu
