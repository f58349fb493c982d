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

constexpr int64_t kQueryBlock = 32;

// Work item: one (batch, query head, block of kQueryBlock query rows). For each key tile the K
// tile is converted to f32 and transposed ([D][tile]) and the V tile converted ([tile][D]) once,
// then shared by the block's rows: scores are vectorised over keys (no horizontal sums) and the
// output update over D. Per row the state is the online-softmax max m, sum l and a D-float
// accumulator, so memory stays O(tile * D) per thread whatever Skv is.
template <typename S>
void AttentionImpl(const typename S::T* q, const typename S::T* k, const typename S::T* v,
                   typename S::T* out, const AttnShape& sh, const int32_t* lengths, bool causal,
                   float scale, int threads) {
  using T = typename S::T;
  const int64_t d = sh.d;
  const int64_t qblocks = (sh.sq + kQueryBlock - 1) / kQueryBlock;
  const int64_t items = sh.b * sh.hq * qblocks;
  const int64_t group = sh.hq / sh.hkv;
  const int nt = Threads(threads, items, sh.b * sh.hq * sh.sq * sh.skv * d);
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> kt(static_cast<size_t>(kKeyTile * d)), vt(static_cast<size_t>(kKeyTile * d));
    std::vector<float> qb(static_cast<size_t>(kQueryBlock * d)), acc(static_cast<size_t>(kQueryBlock * d));
    float m[kQueryBlock], l[kQueryBlock], scores[kKeyTile];
    int64_t limit[kQueryBlock];
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t qblk = item % qblocks;
      const int64_t h = (item / qblocks) % sh.hq;
      const int64_t bi = item / (qblocks * sh.hq);
      const int64_t kvh = h / group;
      const T* kbase = k + (bi * sh.hkv + kvh) * sh.kv_capacity * d;
      const T* vbase = v + (bi * sh.hkv + kvh) * sh.kv_capacity * d;
      const int64_t i0 = qblk * kQueryBlock;
      const int64_t nrows = std::min(kQueryBlock, sh.sq - i0);
      const int64_t valid = lengths ? std::clamp<int64_t>(lengths[bi], 0, sh.skv) : sh.skv;
      int64_t max_limit = 0;
      for (int64_t r = 0; r < nrows; ++r) {
        limit[r] = valid;
        if (causal) limit[r] = std::min(valid, std::max<int64_t>(0, i0 + r + (sh.skv - sh.sq) + 1));
        max_limit = std::max(max_limit, limit[r]);
        m[r] = -INFINITY;
        l[r] = 0.0f;
        const T* qr = q + ((bi * sh.hq + h) * sh.sq + i0 + r) * d;
        float* qd = qb.data() + r * d;
        float* ad = acc.data() + r * d;
#pragma omp simd
        for (int64_t x = 0; x < d; ++x) {
          qd[x] = S::Load(qr[x]) * scale;
          ad[x] = 0.0f;
        }
      }
      for (int64_t j0 = 0; j0 < max_limit; j0 += kKeyTile) {
        const int64_t tile = std::min(kKeyTile, max_limit - j0);
        for (int64_t jj = 0; jj < tile; ++jj) {
          const T* kr = kbase + (j0 + jj) * d;
          const T* vr = vbase + (j0 + jj) * d;
          float* vd = vt.data() + jj * d;
          for (int64_t x = 0; x < d; ++x) kt[x * kKeyTile + jj] = S::Load(kr[x]);
#pragma omp simd
          for (int64_t x = 0; x < d; ++x) vd[x] = S::Load(vr[x]);
        }
        for (int64_t r = 0; r < nrows; ++r) {
          if (j0 >= limit[r]) continue;
          const int64_t jn = std::min(tile, limit[r] - j0);
          const float* qd = qb.data() + r * d;
#pragma omp simd
          for (int64_t jj = 0; jj < jn; ++jj) scores[jj] = 0.0f;
          for (int64_t x = 0; x < d; ++x) {
            const float qx = qd[x];
            const float* kx = kt.data() + x * kKeyTile;
#pragma omp simd
            for (int64_t jj = 0; jj < jn; ++jj) scores[jj] += qx * kx[jj];
          }
          float block_max = -INFINITY;
#pragma omp simd reduction(max : block_max)
          for (int64_t jj = 0; jj < jn; ++jj) block_max = std::max(block_max, scores[jj]);
          const float factor = OnlineSoftmaxRescale(m[r], block_max);
          float block_sum = 0.0f;
          const float mr = m[r];
#pragma omp simd reduction(+ : block_sum)
          for (int64_t jj = 0; jj < jn; ++jj) {
            scores[jj] = expf(scores[jj] - mr);
            block_sum += scores[jj];
          }
          l[r] = l[r] * factor + block_sum;
          float* ad = acc.data() + r * d;
#pragma omp simd
          for (int64_t x = 0; x < d; ++x) ad[x] *= factor;
          for (int64_t jj = 0; jj < jn; ++jj) {
            const float p = scores[jj];
            const float* vd = vt.data() + jj * d;
#pragma omp simd
            for (int64_t x = 0; x < d; ++x) ad[x] += p * vd[x];
          }
        }
      }
      for (int64_t r = 0; r < nrows; ++r) {
        // A row with no valid key (length 0) gives zeros.
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        const float* ad = acc.data() + r * d;
        T* orow = out + ((bi * sh.hq + h) * sh.sq + i0 + r) * d;
#pragma omp simd
        for (int64_t x = 0; x < d; ++x) orow[x] = S::Store(ad[x] * inv);
      }
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
