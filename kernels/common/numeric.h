// Scalar math shared by the CPU and CUDA implementations: one source of truth for every
// per-element formula (the f16/bf16 conversions come from runtime/core/half.h). Functions are ARCHI_HD
// (__host__ __device__ under nvcc, plain inline otherwise), so the CPU tests exercise the very
// code the GPU kernels run.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "runtime/core/half.h"  // ARCHI_HD and the f16/bf16 conversions

namespace archi::kernels {

// The f16/bf16 conversions live in runtime/core/half.h (shared with the collectives).
using ::archi::Bf16ToFloat;
using ::archi::FloatToBf16;
using ::archi::FloatToHalf;
using ::archi::HalfToFloat;

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
