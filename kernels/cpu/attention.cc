// CPU attention (tiled over keys with an online softmax: O(D) state per query row, never a
// [Sq, Skv] score matrix), KV-cache append and rotary embeddings.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_ops.h"

namespace archi::kernels::cpu {
namespace {

constexpr int64_t kKeyTile = 64;

struct AttnShape {
  int64_t b, hq, hkv, sq, skv, d;
  int64_t kv_capacity;  // positions allocated per (b, head) in k/v (Skv, or max_seq of a cache)
};

template <typename S>
void AttentionImpl(const typename S::T* q, const typename S::T* k, const typename S::T* v,
                   typename S::T* out, const AttnShape& sh, const int32_t* lengths, bool causal,
                   float scale, int threads) {
  using T = typename S::T;
  const int64_t rows = sh.b * sh.hq * sh.sq;
  const int64_t group = sh.hq / sh.hkv;
  const int64_t d = sh.d;
  const int nt = Threads(threads, rows, rows * sh.skv * d);
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> qrow(static_cast<size_t>(d)), acc(static_cast<size_t>(d));
    float scores[kKeyTile];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r % sh.sq;
      const int64_t h = (r / sh.sq) % sh.hq;
      const int64_t bi = r / (sh.sq * sh.hq);
      const int64_t kvh = h / group;
      const T* kbase = k + (bi * sh.hkv + kvh) * sh.kv_capacity * d;
      const T* vbase = v + (bi * sh.hkv + kvh) * sh.kv_capacity * d;
      int64_t limit = lengths ? std::clamp<int64_t>(lengths[bi], 0, sh.skv) : sh.skv;
      if (causal) limit = std::min(limit, std::max<int64_t>(0, i + (sh.skv - sh.sq) + 1));

      const T* qr = q + r * d;
#pragma omp simd
      for (int64_t x = 0; x < d; ++x) {
        qrow[x] = S::Load(qr[x]) * scale;
        acc[x] = 0.0f;
      }
      float m = -INFINITY, l = 0.0f;
      for (int64_t j0 = 0; j0 < limit; j0 += kKeyTile) {
        const int64_t jn = std::min(kKeyTile, limit - j0);
        float block_max = -INFINITY;
        for (int64_t jj = 0; jj < jn; ++jj) {
          const T* kr = kbase + (j0 + jj) * d;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t x = 0; x < d; ++x) s += qrow[x] * S::Load(kr[x]);
          scores[jj] = s;
          block_max = std::max(block_max, s);
        }
        const float factor = OnlineSoftmaxRescale(m, block_max);
        l *= factor;
#pragma omp simd
        for (int64_t x = 0; x < d; ++x) acc[x] *= factor;
        for (int64_t jj = 0; jj < jn; ++jj) {
          const float p = expf(scores[jj] - m);
          l += p;
          const T* vr = vbase + (j0 + jj) * d;
#pragma omp simd
          for (int64_t x = 0; x < d; ++x) acc[x] += p * S::Load(vr[x]);
        }
      }
      // A row with no valid key (length 0) gives zeros.
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      T* orow = out + r * d;
#pragma omp simd
      for (int64_t x = 0; x < d; ++x) orow[x] = S::Store(acc[x] * inv);
    }
  }
}

float ResolveScale(float scale, int64_t d) {
  return scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(d));
}

}  // namespace

Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_lengths,
                 Tensor& out, const AttentionOptions& opts, const KernelContext& ctx) {
  const auto& qs = q.shape();
  const auto& ks = k.shape();
  const AttnShape sh{qs[0], qs[1], ks[1], qs[2], ks[2], qs[3], ks[2]};
  const int32_t* lens = key_lengths ? key_lengths->data_as<const int32_t>() : nullptr;
  DispatchFloat(q.dtype(), [&]<typename S>() {
    using T = typename S::T;
    AttentionImpl<S>(q.data_as<const T>(), k.data_as<const T>(), v.data_as<const T>(),
                     out.data_as<T>(), sh, lens, opts.causal, ResolveScale(opts.scale, sh.d),
                     ctx.num_threads);
  });
  return Status::Ok();
}

Status KvAppend(KvCache& cache, const Tensor& k_new, const Tensor& v_new,
                const KernelContext& ctx) {
  const auto& cs = cache.k.shape();
  const auto& ns = k_new.shape();
  const int64_t b = ns[0], h = ns[1], s_new = ns[2], d = ns[3], cap = cs[2];
  const size_t es = DTypeSize(k_new.dtype());
  const size_t chunk = static_cast<size_t>(s_new * d) * es;
  const int64_t heads = b * h;
  const int nt = Threads(ctx.num_threads, heads, heads * s_new * d);
  const int64_t pos = cache.length;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t bh = 0; bh < heads; ++bh) {
    const size_t dst_off = static_cast<size_t>((bh * cap + pos) * d) * es;
    const size_t src_off = static_cast<size_t>(bh) * chunk;
    std::memcpy(static_cast<char*>(cache.k.data()) + dst_off,
                static_cast<const char*>(k_new.data()) + src_off, chunk);
    std::memcpy(static_cast<char*>(cache.v.data()) + dst_off,
                static_cast<const char*>(v_new.data()) + src_off, chunk);
  }
  cache.length += s_new;
  return Status::Ok();
}

Status AttentionKv(const Tensor& q, const KvCache& cache, Tensor& out,
                   const AttentionOptions& opts, const KernelContext& ctx) {
  const auto& qs = q.shape();
  const auto& cs = cache.k.shape();
  const AttnShape sh{qs[0], qs[1], cs[1], qs[2], cache.length, qs[3], cs[2]};
  DispatchFloat(q.dtype(), [&]<typename S>() {
    using T = typename S::T;
    AttentionImpl<S>(q.data_as<const T>(), cache.k.data_as<const T>(),
                     cache.v.data_as<const T>(), out.data_as<T>(), sh, nullptr,
                     /*causal=*/true, ResolveScale(opts.scale, sh.d), ctx.num_threads);
  });
  return Status::Ok();
}

Status Rotary(Tensor& x, int64_t position_offset, float theta, const KernelContext& ctx) {
  const auto& xs = x.shape();
  const int64_t bh = xs[0] * xs[1], s = xs[2], d = xs[3], half = d / 2;
  // cos/sin table [S, D/2] shared by every (batch, head).
  std::vector<float> cos_t(static_cast<size_t>(s * half)), sin_t(static_cast<size_t>(s * half));
  for (int64_t p = 0; p < s; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float a = RotaryAngle(position_offset + p, static_cast<int>(i), static_cast<int>(d),
                                  theta);
      cos_t[p * half + i] = cosf(a);
      sin_t[p * half + i] = sinf(a);
    }
  }
  const int64_t rows = bh * s;
  DispatchFloat(x.dtype(), [&]<typename S>() {
    using T = typename S::T;
    T* xp = x.data_as<T>();
    const int nt = Threads(ctx.num_threads, rows, rows * d * 4);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      T* row = xp + r * d;
      const float* c = cos_t.data() + (r % s) * half;
      const float* sn = sin_t.data() + (r % s) * half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        float x1 = S::Load(row[i]), x2 = S::Load(row[i + half]);
        RotatePair(x1, x2, c[i], sn[i]);
        row[i] = S::Store(x1);
        row[i + half] = S::Store(x2);
      }
    }
  });
  return Status::Ok();
}

}  // namespace archi::kernels::cpu
