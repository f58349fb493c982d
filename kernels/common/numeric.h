// Scalar math shared by the CPU and CUDA implementations: one source of truth for every
// per-element formula and for the f16/bf16 <-> f32 conversions. Functions are ARCHI_HD
// (__host__ __device__ under nvcc, plain inline otherwise), so the CPU tests exercise the very
// code the GPU kernels run.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define ARCHI_HD __host__ __device__ __forceinline__
#else
#define ARCHI_HD inline
#endif

namespace archi::kernels {

// bf16: the top 16 bits of an f32, round to nearest even; NaN stays NaN.
ARCHI_HD float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}
ARCHI_HD uint16_t FloatToBf16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE binary16, round to nearest even, with subnormals, infinities and NaN.
ARCHI_HD float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}
ARCHI_HD uint16_t FloatToHalf(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;                 // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;                // overflow -> inf
  if (abs < 0x38800000u) {                                      // subnormal or zero
    if (abs < 0x33000000u) return sign;                         // rounds to zero
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;                           // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return sign | static_cast<uint16_t>(h);
  }
  uint32_t h = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

// Activations (f32 in, f32 out).
ARCHI_HD float GeluErf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
// GeluTanh = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), evaluated as the identical
// x * sigmoid(2u) = x / (1 + exp(-2u)): one expf instead of the costlier tanhf (CPU libmvec), and
// no cancellation in 1 + tanh(u) for negative x (relative error 2e-6 vs 8e-2 there).
ARCHI_HD float GeluTanh(float x) {
  const float k2 = 1.59576912160573072f;  // 2 sqrt(2/pi)
  return x / (1.0f + expf(-k2 * (x + 0.044715f * x * x * x)));
}
ARCHI_HD float Silu(float x) { return x / (1.0f + expf(-x)); }

// Rotary: the rotation angle of pair i (0 <= i < D/2) at `position`.
ARCHI_HD float RotaryAngle(int64_t position, int i, int dim, float theta) {
  return static_cast<float>(position) * powf(theta, -2.0f * static_cast<float>(i) / static_cast<float>(dim));
}

// SwiGLU gate: silu(gate) * up.
ARCHI_HD float SwiGlu(float gate, float up) { return Silu(gate) * up; }

// Normalisation: the reciprocal standard deviation of LayerNorm (var = mean of squared
// deviations) and RMSNorm (var = mean of squares).
ARCHI_HD float NormRstd(float var, float eps) { return 1.0f / sqrtf(var + eps); }
// LayerNorm of one element given the row's mean and rstd.
ARCHI_HD float LayerNormApply(float x, float mean, float rstd, float gamma, float beta) {
  return (x - mean) * rstd * gamma + beta;
}
// L2 normalisation scale of a row with sum of squares `ss` (PyTorch F.normalize: x / max(|x|,
// eps)).
ARCHI_HD float L2Scale(float ss, float eps) { return 1.0f / fmaxf(sqrtf(ss), eps); }

// Online softmax (attention): running max `m` and running sum `l` of exp(s - m). Feeding the
// block maximum `block_max` returns the factor by which the accumulated sum and output must be
// rescaled; m is updated. Start with m = -INFINITY, l = 0.
ARCHI_HD float OnlineSoftmaxRescale(float& m, float block_max) {
  const float m_new = fmaxf(m, block_max);
  const float factor = (m == -INFINITY) ? 0.0f : expf(m - m_new);
  m = m_new;
  return factor;
}

// Rotary "rotate half": rotates the pair (x1 = x[i], x2 = x[i + D/2]) by `angle`.
ARCHI_HD void RotatePair(float& x1, float& x2, float cos_a, float sin_a) {
  const float a = x1, b = x2;
  x1 = a * cos_a - b * sin_a;
  x2 = b * cos_a + a * sin_a;
}

}  // namespace archi::kernels
