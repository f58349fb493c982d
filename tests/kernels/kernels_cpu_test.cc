// CPU kernels against straightforward references written here (double accumulation), over random
// shapes including odd sizes, for f32, f16 and bf16, single- and multi-threaded; plus validation
// (wrong shapes, mixed dtypes, aliasing, out-of-range ids) returning the documented codes.
//
// Tolerances (|got - want| <= atol + rtol * |want|), dominated by the output's storage rounding:
//   f32: atol 1e-4, rtol 1e-4   (f32 accumulation vs double)
//   f16: atol 2e-3, rtol 2e-3   (f16 has an 11-bit significand: 4.9e-4 relative rounding)
//   bf16: atol 1.6e-2, rtol 1.6e-2 (8-bit significand: 3.9e-3 relative rounding, plus inputs of
//         intermediate bf16 results in ops that round once more)
// GEMM and attention scale atol by sqrt(K) (accumulated rounding of K products).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "archi/config.h"
#include "kernels/common/numeric.h"
#include "kernels/ops.h"

namespace archi::kernels {
namespace {

constexpr DType kFloatTypes[] = {DType::kF32, DType::kF16, DType::kBF16};
constexpr int kThreadModes[] = {1, 2};

struct Tol {
  double atol, rtol;
};
Tol TolFor(DType d, double scale = 1.0) {
  switch (d) {
    case DType::kF16:
      return {2e-3 * scale, 2e-3};
    case DType::kBF16:
      return {1.6e-2 * scale, 1.6e-2};
    default:
      return {1e-4 * scale, 1e-4};
  }
}

float Quantise(float v, DType d) {
  if (d == DType::kF16) return HalfToFloat(FloatToHalf(v));
  if (d == DType::kBF16) return Bf16ToFloat(FloatToBf16(v));
  return v;
}

// A host tensor plus the exact values it stores (as doubles) for the reference.
struct HostT {
  Tensor t;
  std::vector<double> v;
};

Tensor Alloc(std::vector<int64_t> shape, DType d) {
  auto r = Tensor::Empty(std::move(shape), d);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

void Write(Tensor& t, const std::vector<double>& vals) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float f = static_cast<float>(vals[i]);
    switch (t.dtype()) {
      case DType::kF32:
        t.data_as<float>()[i] = f;
        break;
      case DType::kF16:
        t.data_as<uint16_t>()[i] = FloatToHalf(f);
        break;
      case DType::kBF16:
        t.data_as<uint16_t>()[i] = FloatToBf16(f);
        break;
      default:
        FAIL();
    }
  }
}

std::vector<double> Read(const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::kF32:
        out[i] = t.data_as<float>()[i];
        break;
      case DType::kF16:
        out[i] = HalfToFloat(t.data_as<uint16_t>()[i]);
        break;
      case DType::kBF16:
        out[i] = Bf16ToFloat(t.data_as<uint16_t>()[i]);
        break;
      default:
        ADD_FAILURE();
    }
  }
  return out;
}

std::mt19937& Rng() {
  static std::mt19937 rng(12345);
  return rng;
}

HostT Random(std::vector<int64_t> shape, DType d, double lo = -1.0, double hi = 1.0) {
  HostT h{Alloc(std::move(shape), d), {}};
  std::uniform_real_distribution<double> u(lo, hi);
  h.v.resize(static_cast<size_t>(h.t.numel()));
  for (auto& x : h.v) x = Quantise(static_cast<float>(u(Rng())), d);
  Write(h.t, h.v);
  return h;
}

int64_t RandInt(int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(Rng());
}

void ExpectNear(const std::vector<double>& got, const std::vector<double>& want, Tol tol,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double lim = tol.atol + tol.rtol * std::fabs(want[i]);
    if (!(std::fabs(got[i] - want[i]) <= lim)) {
      if (++bad <= 3) {
        ADD_FAILURE() << what << " at " << i << ": got " << got[i] << " want " << want[i]
                      << " (limit " << lim << ")";
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements off";
}

std::string Name(DType d, int threads) {
  return std::string(DTypeName(d)) + " threads=" + std::to_string(threads);
}

// ---- references (double) ----------------------------------------------------------------------

std::vector<double> RefGemm(const std::vector<double>& a, const std::vector<double>& b,
                            const std::vector<double>* bias, const std::vector<double>& c0,
                            int64_t m, int64_t n, int64_t k, const GemmOptions& o) {
  std::vector<double> c(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += a[i * k + p] * (o.trans_b ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = o.alpha * s + o.beta * c0[i * n + j] + (bias ? (*bias)[j] : 0.0);
    }
  }
  return c;
}

// ---- GEMM --------------------------------------------------------------------------------------

TEST(KernelsCpu, GemmRandomShapes) {
  const int64_t sizes[] = {1, 3, 8, 17, 63, 130};
  for (DType d : kFloatTypes) {
    for (int trial = 0; trial < 10; ++trial) {
      const int64_t m = sizes[RandInt(0, 5)], n = sizes[RandInt(0, 5)], k = sizes[RandInt(0, 5)];
      GemmOptions o;
      o.trans_b = trial % 2 == 0;
      const bool with_bias = trial % 3 != 0;
      if (trial % 4 == 1) o.alpha = 0.5f;
      if (trial % 5 == 2) o.beta = 0.75f;
      const int threads = kThreadModes[trial % 2];
      HostT a = Random({m, k}, d);
      HostT b = o.trans_b ? Random({n, k}, d) : Random({k, n}, d);
      HostT bias = Random({n}, d);
      HostT c = Random({m, n}, d);
      ASSERT_TRUE(Gemm(a.t, b.t, with_bias ? &bias.t : nullptr, c.t, o, {threads}).ok());
      ExpectNear(Read(c.t), RefGemm(a.v, b.v, with_bias ? &bias.v : nullptr, c.v, m, n, k, o),
                 TolFor(d, std::sqrt(static_cast<double>(k))),
                 "Gemm " + Name(d, threads) + " m=" + std::to_string(m) + " n=" +
                     std::to_string(n) + " k=" + std::to_string(k) + " alpha=" +
                     std::to_string(o.alpha) + " beta=" + std::to_string(o.beta) +
                     (with_bias ? " bias" : "") + (o.trans_b ? " trans_b" : ""));
    }
  }
}

TEST(KernelsCpu, GemmLeadingDimsAndZeroK) {
  for (DType d : kFloatTypes) {
    HostT a = Random({2, 5, 33}, d);
    HostT b = Random({7, 33}, d);
    HostT bias = Random({7}, d);
    HostT c = Random({2, 5, 7}, d);
    ASSERT_TRUE(Gemm(a.t, b.t, &bias.t, c.t).ok());
    ExpectNear(Read(c.t), RefGemm(a.v, b.v, &bias.v, c.v, 10, 7, 33, {}), TolFor(d, 6),
               "Gemm 3-D " + Name(d, 0));
    // K = 0: c = beta*c + bias.
    HostT a0 = Random({4, 0}, d);
    HostT b0 = Random({6, 0}, d);
    HostT bias0 = Random({6}, d);
    HostT c0 = Random({4, 6}, d);
    GemmOptions o;
    o.beta = 0.5f;
    ASSERT_TRUE(Gemm(a0.t, b0.t, &bias0.t, c0.t, o).ok());
    ExpectNear(Read(c0.t), RefGemm(a0.v, b0.v, &bias0.v, c0.v, 4, 6, 0, o), TolFor(d),
               "Gemm K=0 " + Name(d, 0));
  }
}

TEST(KernelsCpu, BatchedGemm) {
  for (DType d : kFloatTypes) {
    for (bool trans_b : {true, false}) {
      const int64_t bs = 3, m = 17, n = 9, k = 63;
      GemmOptions o;
      o.trans_b = trans_b;
      HostT a = Random({bs, m, k}, d);
      HostT b = trans_b ? Random({bs, n, k}, d) : Random({bs, k, n}, d);
      HostT c = Random({bs, m, n}, d);
      ASSERT_TRUE(BatchedGemm(a.t, b.t, c.t, o, {2}).ok());
      std::vector<double> want;
      for (int64_t i = 0; i < bs; ++i) {
        std::vector<double> ai(a.v.begin() + i * m * k, a.v.begin() + (i + 1) * m * k);
        std::vector<double> bi(b.v.begin() + i * n * k, b.v.begin() + (i + 1) * n * k);
        std::vector<double> ci(c.v.begin() + i * m * n, c.v.begin() + (i + 1) * m * n);
        auto r = RefGemm(ai, bi, nullptr, ci, m, n, k, o);
        want.insert(want.end(), r.begin(), r.end());
      }
      ExpectNear(Read(c.t), want, TolFor(d, 8), "BatchedGemm " + Name(d, 2));
    }
  }
}

// ---- element-wise ------------------------------------------------------------------------------

template <typename Op, typename Ref>
void CheckUnary(const char* what, Op op, Ref ref, double lo = -4, double hi = 4) {
  for (DType d : kFloatTypes) {
    for (int threads : kThreadModes) {
      for (int64_t n : {1, 3, 17, 63, 5000, 70001}) {
        HostT x = Random({n}, d, lo, hi);
        Tensor y = Alloc({n}, d);
        ASSERT_TRUE(op(x.t, y, KernelContext{threads}).ok());
        std::vector<double> want(x.v.size());
        for (size_t i = 0; i < want.size(); ++i) want[i] = ref(x.v[i]);
        ExpectNear(Read(y), want, TolFor(d), std::string(what) + " " + Name(d, threads));
        // In place (y aliases x).
        ASSERT_TRUE(op(x.t, x.t, KernelContext{threads}).ok());
        ExpectNear(Read(x.t), want, TolFor(d), std::string(what) + " in place " + Name(d, threads));
      }
    }
  }
}

TEST(KernelsCpu, Activations) {
  CheckUnary(
      "GeluErf", [](const Tensor& x, Tensor& y, KernelContext c) { return Gelu(x, y, GeluKind::kErf, c); },
      [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
  CheckUnary(
      "GeluTanh", [](const Tensor& x, Tensor& y, KernelContext c) { return Gelu(x, y, GeluKind::kTanh, c); },
      [](double v) {
        return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
      });
  CheckUnary(
      "Silu", [](const Tensor& x, Tensor& y, KernelContext c) { return Silu(x, y, c); },
      [](double v) { return v / (1 + std::exp(-v)); });
}

TEST(KernelsCpu, SwiGluAndAdd) {
  for (DType d : kFloatTypes) {
    for (int threads : kThreadModes) {
      for (int64_t n : {1, 17, 9001}) {
        HostT g = Random({n}, d, -4, 4), u = Random({n}, d, -2, 2);
        Tensor y = Alloc({n}, d);
        ASSERT_TRUE(SwiGlu(g.t, u.t, y, {threads}).ok());
        std::vector<double> want(g.v.size()), sum(g.v.size());
        for (size_t i = 0; i < want.size(); ++i) {
          want[i] = g.v[i] / (1 + std::exp(-g.v[i])) * u.v[i];
          sum[i] = g.v[i] + u.v[i];
        }
        ExpectNear(Read(y), want, TolFor(d, 2), "SwiGlu " + Name(d, threads));
        ASSERT_TRUE(Add(g.t, u.t, g.t, {threads}).ok());  // out aliases a
        ExpectNear(Read(g.t), sum, TolFor(d, 2), "Add " + Name(d, threads));
      }
    }
  }
}

// ---- row ops -----------------------------------------------------------------------------------

TEST(KernelsCpu, LayerNormRmsNorm) {
  for (DType d : kFloatTypes) {
    for (int threads : kThreadModes) {
      for (auto [r, h] : {std::pair<int64_t, int64_t>{1, 1}, {3, 17}, {63, 384}, {5, 1001}}) {
        HostT x = Random({r, h}, d, -3, 3), g = Random({h}, d, 0.5, 1.5), b = Random({h}, d);
        Tensor y = Alloc({r, h}, d), z = Alloc({r, h}, d);
        const float eps = 1e-5f;
        ASSERT_TRUE(LayerNorm(x.t, g.t, b.t, eps, y, {threads}).ok());
        ASSERT_TRUE(RmsNorm(x.t, g.t, eps, z, {threads}).ok());
        std::vector<double> ln(x.v.size()), rms(x.v.size());
        for (int64_t i = 0; i < r; ++i) {
          double mean = 0, ss = 0, var = 0;
          for (int64_t j = 0; j < h; ++j) mean += x.v[i * h + j], ss += x.v[i * h + j] * x.v[i * h + j];
          mean /= h;
          for (int64_t j = 0; j < h; ++j) var += (x.v[i * h + j] - mean) * (x.v[i * h + j] - mean);
          var /= h;
          for (int64_t j = 0; j < h; ++j) {
            ln[i * h + j] = (x.v[i * h + j] - mean) / std::sqrt(var + eps) * g.v[j] + b.v[j];
            rms[i * h + j] = x.v[i * h + j] / std::sqrt(ss / h + eps) * g.v[j];
          }
        }
        const std::string tag = Name(d, threads) + " h=" + std::to_string(h);
        ExpectNear(Read(y), ln, TolFor(d, 4), "LayerNorm " + tag);
        ExpectNear(Read(z), rms, TolFor(d, 4), "RmsNorm " + tag);
        ASSERT_TRUE(LayerNorm(x.t, g.t, b.t, eps, x.t, {threads}).ok());  // in place
        ExpectNear(Read(x.t), ln, TolFor(d, 4), "LayerNorm in place " + tag);
      }
    }
  }
}

TEST(KernelsCpu, SoftmaxAndL2Normalize) {
  for (DType d : kFloatTypes) {
    for (int threads : kThreadModes) {
      for (auto [r, h] : {std::pair<int64_t, int64_t>{1, 1}, {3, 17}, {63, 384}, {5, 1001}}) {
        HostT x = Random({r, h}, d, -5, 5);
        Tensor y = Alloc({r, h}, d), z = Alloc({r, h}, d);
        ASSERT_TRUE(Softmax(x.t, y, {threads}).ok());
        ASSERT_TRUE(L2Normalize(x.t, z, 1e-12f, {threads}).ok());
        std::vector<double> sm(x.v.size()), l2(x.v.size());
        for (int64_t i = 0; i < r; ++i) {
          double mx = -1e300, s = 0, ss = 0;
          for (int64_t j = 0; j < h; ++j) mx = std::max(mx, x.v[i * h + j]);
          for (int64_t j = 0; j < h; ++j) s += std::exp(x.v[i * h + j] - mx), ss += x.v[i * h + j] * x.v[i * h + j];
          for (int64_t j = 0; j < h; ++j) {
            sm[i * h + j] = std::exp(x.v[i * h + j] - mx) / s;
            l2[i * h + j] = x.v[i * h + j] / std::max(std::sqrt(ss), 1e-12);
          }
        }
        const std::string tag = Name(d, threads) + " h=" + std::to_string(h);
        ExpectNear(Read(y), sm, TolFor(d), "Softmax " + tag);
        ExpectNear(Read(z), l2, TolFor(d), "L2Normalize " + tag);
      }
    }
  }
}

TEST(KernelsCpu, MeanPool) {
  for (DType d : kFloatTypes) {
    for (int threads : kThreadModes) {
      const int64_t b = 4, s = 13, h = 37;
      HostT x = Random({b, s, h}, d);
      Tensor lens = Alloc({b}, DType::kI32);
      const int32_t lv[] = {13, 1, 7, 0};
      std::memcpy(lens.data(), lv, sizeof(lv));
      Tensor out = Alloc({b, h}, d), out_all = Alloc({b, h}, d);
      ASSERT_TRUE(MeanPool(x.t, &lens, out, {threads}).ok());
      ASSERT_TRUE(MeanPool(x.t, nullptr, out_all, {threads}).ok());
      std::vector<double> want(b * h, 0.0), want_all(b * h, 0.0);
      for (int64_t i = 0; i < b; ++i) {
        for (int64_t j = 0; j < h; ++j) {
          double acc = 0, all = 0;
          for (int64_t t = 0; t < s; ++t) {
            all += x.v[(i * s + t) * h + j];
            if (t < lv[i]) acc += x.v[(i * s + t) * h + j];
          }
          want[i * h + j] = lv[i] > 0 ? acc / lv[i] : 0.0;
          want_all[i * h + j] = all / s;
        }
      }
      ExpectNear(Read(out), want, TolFor(d), "MeanPool lengths " + Name(d, threads));
      ExpectNear(Read(out_all), want_all, TolFor(d), "MeanPool " + Name(d, threads));
    }
  }
}

TEST(KernelsCpu, Embedding) {
  for (DType d : kFloatTypes) {
    for (DType id_type : {DType::kI32, DType::kI64}) {
      const int64_t v = 50, h = 19;
      HostT table = Random({v, h}, d);
      Tensor ids = Alloc({2, 3}, id_type);
      const int64_t idv[] = {0, 49, 7, 7, 13, 1};
      for (int i = 0; i < 6; ++i) {
        if (id_type == DType::kI32) ids.data_as<int32_t>()[i] = static_cast<int32_t>(idv[i]);
        else ids.data_as<int64_t>()[i] = idv[i];
      }
      Tensor out = Alloc({2, 3, h}, d);
      ASSERT_TRUE(Embedding(ids, table.t, out, {2}).ok());
      std::vector<double> want;
      for (int64_t id : idv) {
        want.insert(want.end(), table.v.begin() + id * h, table.v.begin() + (id + 1) * h);
      }
      ExpectNear(Read(out), want, {0, 0}, "Embedding");
      for (int64_t bad : {int64_t{-1}, v}) {
        if (id_type == DType::kI32) ids.data_as<int32_t>()[4] = static_cast<int32_t>(bad);
        else ids.data_as<int64_t>()[4] = bad;
        EXPECT_EQ(Embedding(ids, table.t, out).code(), StatusCode::kOutOfRange) << bad;
      }
    }
  }
}

// ---- attention ---------------------------------------------------------------------------------

// q [B,Hq,Sq,D], k/v [B,Hkv,Skv,D] (cap = allocated positions per head).
std::vector<double> RefAttention(const std::vector<double>& q, const std::vector<double>& k,
                                 const std::vector<double>& v, int64_t b, int64_t hq, int64_t hkv,
                                 int64_t sq, int64_t skv, int64_t cap, int64_t d,
                                 const int32_t* lens, bool causal) {
  std::vector<double> out(static_cast<size_t>(b * hq * sq * d), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t kh = h / (hq / hkv);
      for (int64_t i = 0; i < sq; ++i) {
        int64_t limit = lens ? std::min<int64_t>(lens[bi], skv) : skv;
        if (causal) limit = std::min(limit, i + (skv - sq) + 1);
        std::vector<double> s(static_cast<size_t>(std::max<int64_t>(limit, 0)));
        double mx = -1e300, sum = 0;
        const double* qr = &q[((bi * hq + h) * sq + i) * d];
        for (int64_t j = 0; j < limit; ++j) {
          double dot = 0;
          for (int64_t x = 0; x < d; ++x) dot += qr[x] * k[((bi * hkv + kh) * cap + j) * d + x];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = 0; j < limit; ++j) sum += (s[j] = std::exp(s[j] - mx));
        double* o = &out[((bi * hq + h) * sq + i) * d];
        for (int64_t j = 0; j < limit; ++j) {
          for (int64_t x = 0; x < d; ++x) o[x] += s[j] / sum * v[((bi * hkv + kh) * cap + j) * d + x];
        }
      }
    }
  }
  return out;
}

TEST(KernelsCpu, AttentionPaddingCausalGqa) {
  struct Case {
    int64_t b, hq, hkv, sq, skv, d;
    bool causal, lengths;
  };
  const Case cases[] = {{1, 1, 1, 1, 1, 1, false, false},  {2, 4, 2, 17, 17, 8, false, true},
                        {1, 3, 3, 63, 63, 17, true, false}, {2, 4, 1, 5, 130, 32, true, false},
                        {3, 2, 2, 3, 200, 16, false, true}, {1, 2, 1, 1, 257, 64, true, false}};
  for (DType d : kFloatTypes) {
    for (int threads : kThreadModes) {
      for (const Case& c : cases) {
        HostT q = Random({c.b, c.hq, c.sq, c.d}, d, -2, 2);
        HostT k = Random({c.b, c.hkv, c.skv, c.d}, d, -2, 2);
        HostT v = Random({c.b, c.hkv, c.skv, c.d}, d);
        Tensor lens = Alloc({c.b}, DType::kI32);
        for (int64_t i = 0; i < c.b; ++i) {
          lens.data_as<int32_t>()[i] = static_cast<int32_t>(i == 0 ? c.skv : RandInt(0, c.skv));
        }
        Tensor out = Alloc({c.b, c.hq, c.sq, c.d}, d);
        AttentionOptions o;
        o.causal = c.causal;
        ASSERT_TRUE(
            Attention(q.t, k.t, v.t, c.lengths ? &lens : nullptr, out, o, {threads}).ok());
        ExpectNear(Read(out),
                   RefAttention(q.v, k.v, v.v, c.b, c.hq, c.hkv, c.sq, c.skv, c.skv, c.d,
                                c.lengths ? lens.data_as<int32_t>() : nullptr, c.causal),
                   TolFor(d, 2),
                   "Attention " + Name(d, threads) + " skv=" + std::to_string(c.skv) +
                       (c.causal ? " causal" : "") + (c.lengths ? " lengths" : ""));
      }
    }
  }
}

TEST(KernelsCpu, KvCachePrefillThenDecode) {
  for (DType d : kFloatTypes) {
    const int64_t b = 2, hq = 4, hkv = 2, dim = 16, max_seq = 40, prefill = 9, steps = 3;
    const int64_t total = prefill + steps;
    HostT q = Random({b, hq, total, dim}, d, -2, 2);
    HostT k = Random({b, hkv, total, dim}, d, -2, 2);
    HostT v = Random({b, hkv, total, dim}, d);
    const auto want = RefAttention(q.v, k.v, v.v, b, hq, hkv, total, total, total, dim, nullptr,
                                   /*causal=*/true);
    KvCache cache{Alloc({b, hkv, max_seq, dim}, d), Alloc({b, hkv, max_seq, dim}, d), 0};
    // Slices [s0, s0+n) of a [B, H, S, D] host tensor.
    auto slice = [&](const HostT& t, int64_t heads, int64_t s0, int64_t n) {
      Tensor out = Alloc({b, heads, n, dim}, d);
      const size_t es = DTypeSize(d);
      for (int64_t bh = 0; bh < b * heads; ++bh) {
        std::memcpy(static_cast<char*>(out.data()) + bh * n * dim * es,
                    static_cast<const char*>(t.t.data()) + (bh * total + s0) * dim * es,
                    n * dim * es);
      }
      return out;
    };
    int64_t pos = 0;
    for (int64_t n : {prefill, int64_t{1}, int64_t{1}, int64_t{1}}) {
      ASSERT_TRUE(KvAppend(cache, slice(k, hkv, pos, n), slice(v, hkv, pos, n), {2}).ok());
      ASSERT_EQ(cache.length, pos + n);
      Tensor qs = slice(q, hq, pos, n);
      Tensor out = Alloc({b, hq, n, dim}, d);
      ASSERT_TRUE(AttentionKv(qs, cache, out, {}, {2}).ok());
      std::vector<double> w;
      for (int64_t bh = 0; bh < b * hq; ++bh) {
        w.insert(w.end(), want.begin() + (bh * total + pos) * dim,
                 want.begin() + (bh * total + pos + n) * dim);
      }
      ExpectNear(Read(out), w, TolFor(d, 2), "AttentionKv " + Name(d, 2) + " at " +
                                                 std::to_string(pos));
      pos += n;
    }
    Tensor big = Alloc({b, hkv, max_seq, dim}, d);
    EXPECT_EQ(KvAppend(cache, big, big).code(), StatusCode::kOutOfRange);
    EXPECT_EQ(cache.length, total);
  }
}

TEST(KernelsCpu, Rotary) {
  for (DType d : kFloatTypes) {
    for (int threads : kThreadModes) {
      const int64_t b = 2, h = 3, s = 7, dim = 34, offset = 5;
      const float theta = 10000.0f;
      HostT x = Random({b, h, s, dim}, d);
      ASSERT_TRUE(Rotary(x.t, offset, theta, {threads}).ok());
      std::vector<double> want = x.v;
      const int64_t half = dim / 2;
      for (int64_t r = 0; r < b * h * s; ++r) {
        const int64_t p = offset + r % s;
        for (int64_t i = 0; i < half; ++i) {
          const double ang = p * std::pow(static_cast<double>(theta), -2.0 * i / dim);
          const double x1 = x.v[r * dim + i], x2 = x.v[r * dim + i + half];
          want[r * dim + i] = x1 * std::cos(ang) - x2 * std::sin(ang);
          want[r * dim + i + half] = x2 * std::cos(ang) + x1 * std::sin(ang);
        }
      }
      // f32 angles of positions ~10 lose ~1e-6 relative: well inside the f32 tolerance.
      ExpectNear(Read(x.t), want, TolFor(d, 2), "Rotary " + Name(d, threads));
    }
  }
}

// ---- threads agree -----------------------------------------------------------------------------

TEST(KernelsCpu, SingleAndMultiThreadedAgree) {
  for (DType d : kFloatTypes) {
    HostT a = Random({96, 384}, d), w = Random({1536, 384}, d), bias = Random({1536}, d);
    Tensor c1 = Alloc({96, 1536}, d), c2 = Alloc({96, 1536}, d);
    ASSERT_TRUE(Gemm(a.t, w.t, &bias.t, c1, {}, {1}).ok());
    ASSERT_TRUE(Gemm(a.t, w.t, &bias.t, c2, {}, {2}).ok());
    ExpectNear(Read(c2), Read(c1), TolFor(d, 4), "Gemm 1 vs 2 threads " + std::string(DTypeName(d)));
    HostT q = Random({2, 4, 33, 16}, d), k = Random({2, 4, 100, 16}, d), v = Random({2, 4, 100, 16}, d);
    Tensor o1 = Alloc({2, 4, 33, 16}, d), o2 = Alloc({2, 4, 33, 16}, d);
    ASSERT_TRUE(Attention(q.t, k.t, v.t, nullptr, o1, {}, {1}).ok());
    ASSERT_TRUE(Attention(q.t, k.t, v.t, nullptr, o2, {}, {2}).ok());
    ExpectNear(Read(o2), Read(o1), TolFor(d), "Attention 1 vs 2 threads");
    HostT g = Random({384}, d), be = Random({384}, d);
    Tensor l1 = Alloc({96, 384}, d), l2 = Alloc({96, 384}, d);
    ASSERT_TRUE(LayerNorm(a.t, g.t, be.t, 1e-5f, l1, {1}).ok());
    ASSERT_TRUE(LayerNorm(a.t, g.t, be.t, 1e-5f, l2, {0}).ok());
    ExpectNear(Read(l2), Read(l1), TolFor(d), "LayerNorm 1 vs default threads");
  }
}

// ---- validation --------------------------------------------------------------------------------

TEST(KernelsCpu, BadInputGivesInvalidArgument) {
  const auto kInvalid = StatusCode::kInvalidArgument;
  Tensor a = Alloc({4, 8}, DType::kF32), b = Alloc({5, 8}, DType::kF32), c = Alloc({4, 5}, DType::kF32);
  Tensor b_bad = Alloc({5, 7}, DType::kF32), c_bad = Alloc({4, 6}, DType::kF32);
  Tensor b16 = Alloc({5, 8}, DType::kF16), bias_bad = Alloc({4}, DType::kF32);
  EXPECT_TRUE(Gemm(a, b, nullptr, c).ok());
  Status s = Gemm(a, b_bad, nullptr, c);
  EXPECT_EQ(s.code(), kInvalid);
  EXPECT_NE(s.message().find("Gemm"), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("b "), std::string_view::npos) << s;
  EXPECT_EQ(Gemm(a, b, nullptr, c_bad).code(), kInvalid);
  s = Gemm(a, b16, nullptr, c);
  EXPECT_EQ(s.code(), kInvalid);
  EXPECT_NE(s.message().find("dtype"), std::string_view::npos) << s;
  EXPECT_EQ(Gemm(a, b, &bias_bad, c).code(), kInvalid);
  EXPECT_EQ(Gemm(Tensor(), b, nullptr, c).code(), kInvalid);
  // c aliasing a.
  Tensor sq = Alloc({4, 4}, DType::kF32), w = Alloc({4, 4}, DType::kF32);
  EXPECT_EQ(Gemm(sq, w, nullptr, sq).code(), kInvalid);
  // Integer activations.
  Tensor xi = Alloc({4, 8}, DType::kI32);
  EXPECT_EQ(Silu(xi, xi).code(), kInvalid);
  // Element-wise shape/dtype mismatches and partial aliasing.
  Tensor x = Alloc({16}, DType::kF32), y_bad = Alloc({15}, DType::kF32), y16 = Alloc({16}, DType::kBF16);
  EXPECT_EQ(Gelu(x, y_bad).code(), kInvalid);
  EXPECT_EQ(Gelu(x, y16).code(), kInvalid);
  auto shifted = Tensor::View(x.data_as<float>() + 1, {15}, DType::kF32);
  auto head = Tensor::View(x.data(), {15}, DType::kF32);
  ASSERT_TRUE(shifted.ok() && head.ok());
  EXPECT_EQ(Silu(*head, *shifted).code(), kInvalid);
  EXPECT_EQ(Add(x, y16, x).code(), kInvalid);
  // Norm parameters of the wrong size.
  Tensor g = Alloc({7}, DType::kF32);
  EXPECT_EQ(LayerNorm(a, g, g, 1e-5f, a).code(), kInvalid);
  EXPECT_EQ(RmsNorm(a, g, 1e-5f, a).code(), kInvalid);
  // Attention: heads not a multiple, wrong lengths dtype, causal with Skv < Sq.
  Tensor q = Alloc({1, 3, 4, 8}, DType::kF32), k2 = Alloc({1, 2, 4, 8}, DType::kF32);
  Tensor out = Alloc({1, 3, 4, 8}, DType::kF32);
  EXPECT_EQ(Attention(q, k2, k2, nullptr, out).code(), kInvalid);
  Tensor k1 = Alloc({1, 1, 2, 8}, DType::kF32), v1 = Alloc({1, 1, 2, 8}, DType::kF32);
  AttentionOptions causal;
  causal.causal = true;
  EXPECT_EQ(Attention(q, k1, v1, nullptr, out, causal).code(), kInvalid);
  Tensor lens64 = Alloc({1}, DType::kI64);
  EXPECT_EQ(Attention(q, k1, v1, &lens64, out).code(), kInvalid);
  // Rotary with odd head dimension; MeanPool with wrong out shape.
  Tensor odd = Alloc({1, 1, 2, 7}, DType::kF32);
  EXPECT_EQ(Rotary(odd, 0).code(), kInvalid);
  // Rotary positions past 2^24 (or an offset near INT64_MAX, which would overflow) are refused.
  Tensor even = Alloc({1, 1, 2, 8}, DType::kF32);
  EXPECT_EQ(Rotary(even, INT64_MAX).code(), kInvalid);
  EXPECT_EQ(Rotary(even, (int64_t{1} << 24) - 1).code(), kInvalid);
  EXPECT_TRUE(Rotary(even, (int64_t{1} << 24) - 2).ok());
  Tensor x3 = Alloc({2, 3, 4}, DType::kF32), pooled_bad = Alloc({2, 3}, DType::kF32);
  EXPECT_EQ(MeanPool(x3, nullptr, pooled_bad).code(), kInvalid);
  // Embedding with float ids.
  Tensor fids = Alloc({3}, DType::kF32), table = Alloc({10, 4}, DType::kF32), eo = Alloc({3, 4}, DType::kF32);
  EXPECT_EQ(Embedding(fids, table, eo).code(), kInvalid);
}

TEST(KernelsCpu, MixedDevicesAndCudaWithoutKernels) {
  Tensor x = Alloc({16}, DType::kF32);
  // A fake device pointer: validation must reject or report before touching it.
  auto xg = Tensor::View(reinterpret_cast<void*>(0x1000), {16}, DType::kF32, Device::Cuda(0));
  ASSERT_TRUE(xg.ok());
  Status s = Silu(x, *xg);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
#if !ARCHI_HAVE_CUDA
  auto yg = Tensor::View(reinterpret_cast<void*>(0x2000), {16}, DType::kF32, Device::Cuda(0));
  ASSERT_TRUE(yg.ok());
  s = Silu(*xg, *yg);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("CUDA kernels not built"), std::string_view::npos) << s;
#endif
}

}  // namespace
}  // namespace archi::kernels
