// Every CUDA op against the CPU op (the public archi::kernels functions on CPU tensors) on
// identical random inputs, f32/f16/bf16, tolerances per dtype (ToleranceFor). Tensors reach the
// GPU through archi::DeviceBuffer; ops run on the legacy default stream, which DeviceBuffer's
// synchronous copies order against. Each GPU test GTEST_SKIPs with the reason when there is no
// usable GPU (no device, or CUDA errors at setup such as "insufficient driver" on a machine with
// the toolkit but no driver). The LaunchConfig tests check the host-side tiling logic and run
// everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/common/numeric.h"
#include "kernels/cuda/launch_config.h"
#include "kernels/ops.h"
#include "runtime/core/device_buffer.h"

namespace archi::kernels {
namespace {

// ---- host-side launch configuration (no GPU needed) ---------------------------------------------

TEST(LaunchConfigTest, RowKernelsUseAWarpUpTo1024ColumnsElseABlock) {
  using cuda::ChooseRowConfig;
  auto c = ChooseRowConfig(/*rows=*/17, /*cols=*/384);
  EXPECT_TRUE(c.warp_per_row);
  EXPECT_EQ(c.threads, cuda::kRowWarpsPerBlock * cuda::kWarpSize);
  EXPECT_EQ(c.blocks, 3);  // 17 rows, 8 per block
  c = ChooseRowConfig(1, 1024);
  EXPECT_TRUE(c.warp_per_row);
  EXPECT_EQ(c.blocks, 1);
  c = ChooseRowConfig(5, 1025);
  EXPECT_FALSE(c.warp_per_row);
  EXPECT_EQ(c.blocks, 5);
  EXPECT_EQ(c.threads, 512);
  EXPECT_EQ(ChooseRowConfig(2, 8192).threads, 1024);
  EXPECT_EQ(ChooseRowConfig(0, 8).blocks, 1);  // never an empty grid
}

TEST(LaunchConfigTest, ElementwiseGridIsCappedAndNeverEmpty) {
  EXPECT_EQ(cuda::ElementwiseBlocks(0), 1);
  EXPECT_EQ(cuda::ElementwiseBlocks(257, 256), 2);
  EXPECT_EQ(cuda::ElementwiseBlocks(int64_t{1} << 40), cuda::kMaxElementwiseBlocks);
}

TEST(LaunchConfigTest, AttentionTiling) {
  using cuda::ChooseAttentionConfig;
  // Decode, no GQA: one row per kv head, still 4 warps to load the tiles.
  auto c = ChooseAttentionConfig(/*head_dim=*/64, /*rows_per_kv_head=*/1);
  EXPECT_EQ(c.warps, 4);
  EXPECT_EQ(c.head_dim_chunks, 2);
  EXPECT_EQ(c.row_blocks, 1);
  EXPECT_EQ(c.smem_bytes, sizeof(float) * (2 * 32 * 65 + 4 * 64));
  // Prefill: 8 rows per block.
  c = ChooseAttentionConfig(128, 4 * 100);
  EXPECT_EQ(c.warps, 8);
  EXPECT_EQ(c.head_dim_chunks, 4);
  EXPECT_EQ(c.row_blocks, 50);
  c = ChooseAttentionConfig(129, 9);
  EXPECT_EQ(c.head_dim_chunks, 8);
  EXPECT_EQ(c.row_blocks, 2);
  // The largest head dim needs more than the default 48 KiB (the launcher raises the limit) but
  // stays within what sm_80+ allows per block.
  c = ChooseAttentionConfig(cuda::kAttnMaxHeadDim, 1000);
  EXPECT_GT(c.smem_bytes, 48u * 1024);
  EXPECT_LE(c.smem_bytes, 163u * 1024);
  // Every head dim up to the maximum fits its chunks (32 lanes x chunks >= head_dim).
  for (int64_t d = 1; d <= cuda::kAttnMaxHeadDim; ++d) {
    EXPECT_GE(cuda::kWarpSize * ChooseAttentionConfig(d, 1).head_dim_chunks, d) << d;
  }
}

// ---- helpers
// --------------------------------------------------------------------------------------

std::string GpuUnavailable() {
  if (CudaDeviceCount() == 0) return "no CUDA device or driver on this machine";
  auto probe = DeviceBuffer::Allocate(16, Device::Cuda(0));
  if (!probe.ok()) return "CUDA unusable here: " + probe.status().ToString();
  return "";
}

#define ARCHI_REQUIRE_GPU()                              \
  do {                                                   \
    const std::string archi_why_ = GpuUnavailable();     \
    if (!archi_why_.empty()) GTEST_SKIP() << archi_why_; \
  } while (0)

// A host tensor owning its bytes.
struct Host {
  Host(std::vector<int64_t> shape, DType dtype) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype) + 1);  // +1: never a null data()
    t = Tensor::View(bytes.data(), std::move(shape), dtype).value();
  }
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;
  float Get(int64_t i) const {
    uint16_t h;
    switch (t.dtype()) {
      case DType::kF32: {
        float f;
        std::memcpy(&f, bytes.data() + 4 * i, 4);
        return f;
      }
      case DType::kF16:
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return HalfToFloat(h);
      case DType::kBF16:
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return Bf16ToFloat(h);
      default:
        return 0.0f;
    }
  }
  void Set(int64_t i, float f) {
    uint16_t h;
    switch (t.dtype()) {
      case DType::kF32:
        std::memcpy(bytes.data() + 4 * i, &f, 4);
        break;
      case DType::kF16:
        h = FloatToHalf(f);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      case DType::kBF16:
        h = FloatToBf16(f);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      default:
        break;
    }
  }
  std::vector<uint8_t> bytes;
  Tensor t;
};

void FillRandom(Host& h, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < h.t.numel(); ++i) h.Set(i, dist(rng));
}

// The same bytes on GPU 0.
struct Dev {
  DeviceBuffer buf;
  Tensor t;
};
Result<Dev> Upload(const Host& h) {
  Dev d;
  ARCHI_ASSIGN_OR_RETURN(d.buf, DeviceBuffer::Allocate(h.t.nbytes(), Device::Cuda(0)));
  ARCHI_RETURN_IF_ERROR(d.buf.CopyFromHost(h.bytes.data(), h.t.nbytes()));
  ARCHI_ASSIGN_OR_RETURN(d.t,
                         Tensor::View(d.buf.data(), h.t.shape(), h.t.dtype(), Device::Cuda(0)));
  return d;
}

// Uploads or skips (a CUDA failure while setting up means no usable GPU, not a kernel bug).
#define ARCHI_UPLOAD(var, host)                                                  \
  auto var##_r = Upload(host);                                                   \
  if (!var##_r.ok()) GTEST_SKIP() << "CUDA unusable here: " << var##_r.status(); \
  Dev& var = *var##_r

struct Tolerance {
  float atol;
  float rtol;
};
Tolerance ToleranceFor(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return {1e-2f, 1e-2f};  // ~10 ulp near 1
    case DType::kBF16:
      return {3e-2f, 3e-2f};  // ~4 ulp near 1
    default:
      return {1e-4f, 1e-4f};  // different summation orders in f32
  }
}

// Downloads `got` and compares it with `want` element by element.
void ExpectClose(const Dev& got, const Host& want, Tolerance tol, const std::string& what) {
  Host back(want.t.shape(), want.t.dtype());
  ASSERT_TRUE(got.buf.CopyToHost(back.bytes.data(), want.t.nbytes()).ok()) << what;
  int bad = 0;
  for (int64_t i = 0; i < want.t.numel(); ++i) {
    const float g = back.Get(i), w = want.Get(i);
    if (!(std::fabs(g - w) <= tol.atol + tol.rtol * std::fabs(w))) {
      if (++bad <= 5) ADD_FAILURE() << what << ": element " << i << " gpu " << g << " cpu " << w;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.t.numel() << " elements differ";
}

KernelContext CpuCtx() {
  KernelContext c;
  c.num_threads = 1;
  return c;
}

class GpuOpTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { ARCHI_REQUIRE_GPU(); }
  DType dt() const { return GetParam(); }
  Tolerance tol() const { return ToleranceFor(GetParam()); }
  std::mt19937 rng_{1234};
};

// ---- GEMM -------------------------------------------------------------------------------------

void CheckGemm(std::mt19937& rng, DType dt, Tolerance tol, int64_t m, int64_t n, int64_t k,
               bool trans_b, bool with_bias, float alpha, float beta) {
  Host a({m, k}, dt), b(trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, dt),
      bias({n}, dt), c({m, n}, dt);
  FillRandom(a, rng);
  FillRandom(b, rng);
  FillRandom(bias, rng);
  FillRandom(c, rng);
  ARCHI_UPLOAD(da, a);
  ARCHI_UPLOAD(db, b);
  ARCHI_UPLOAD(dbias, bias);
  ARCHI_UPLOAD(dc, c);
  GemmOptions opts;
  opts.trans_b = trans_b;
  opts.alpha = alpha;
  opts.beta = beta;
  ASSERT_TRUE(Gemm(a.t, b.t, with_bias ? &bias.t : nullptr, c.t, opts, CpuCtx()).ok());
  const Status s = Gemm(da.t, db.t, with_bias ? &dbias.t : nullptr, dc.t, opts);
  ASSERT_TRUE(s.ok()) << s;
  // Sums of k products: scale the tolerance with sqrt(k).
  const float grow = std::sqrt(static_cast<float>(k));
  ExpectClose(dc, c, {tol.atol * grow, tol.rtol},
              "Gemm m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" +
                  std::to_string(k) + (trans_b ? " trans_b" : "") + (with_bias ? " bias" : ""));
}

TEST_P(GpuOpTest, Gemm) {
  CheckGemm(rng_, dt(), tol(), 37, 53, 71, /*trans_b=*/true, /*bias=*/true, 1.0f, 0.0f);
  CheckGemm(rng_, dt(), tol(), 64, 128, 96, true, false, 1.0f, 0.0f);
  CheckGemm(rng_, dt(), tol(), 5, 33, 17, /*trans_b=*/false, true, 0.5f, 1.0f);
  CheckGemm(rng_, dt(), tol(), 1, 300, 64, true, true, 1.0f, 0.0f);  // decode-like
}

TEST_P(GpuOpTest, BatchedGemm) {
  for (bool trans_b : {true, false}) {
    const int64_t bs = 3, m = 19, n = 23, k = 29;
    Host a({bs, m, k}, dt()),
        b(trans_b ? std::vector<int64_t>{bs, n, k} : std::vector<int64_t>{bs, k, n}, dt()),
        c({bs, m, n}, dt());
    FillRandom(a, rng_);
    FillRandom(b, rng_);
    FillRandom(c, rng_);
    ARCHI_UPLOAD(da, a);
    ARCHI_UPLOAD(db, b);
    ARCHI_UPLOAD(dc, c);
    GemmOptions opts;
    opts.trans_b = trans_b;
    opts.alpha = 0.75f;
    opts.beta = 0.5f;
    ASSERT_TRUE(BatchedGemm(a.t, b.t, c.t, opts, CpuCtx()).ok());
    const Status s = BatchedGemm(da.t, db.t, dc.t, opts);
    ASSERT_TRUE(s.ok()) << s;
    ExpectClose(dc, c, {tol().atol * std::sqrt(float(k)), tol().rtol},
                std::string("BatchedGemm") + (trans_b ? " trans_b" : ""));
  }
}

// ---- lookup, norms, activations
// -------------------------------------------------------------------

TEST_P(GpuOpTest, Embedding) {
  for (DType id_type : {DType::kI32, DType::kI64}) {
    const int64_t vocab = 50, hidden = 37;
    Host table({vocab, hidden}, dt()), ids({3, 7}, id_type), out({3, 7, hidden}, dt());
    FillRandom(table, rng_);
    for (int64_t i = 0; i < ids.t.numel(); ++i) {
      const int64_t id = (i * 17 + 3) % vocab;
      if (id_type == DType::kI32) {
        ids.t.data_as<int32_t>()[i] = static_cast<int32_t>(id);
      } else {
        ids.t.data_as<int64_t>()[i] = id;
      }
    }
    ARCHI_UPLOAD(dtable, table);
    ARCHI_UPLOAD(dids, ids);
    ARCHI_UPLOAD(dout, out);
    ASSERT_TRUE(Embedding(ids.t, table.t, out.t, CpuCtx()).ok());
    const Status s = Embedding(dids.t, dtable.t, dout.t);
    ASSERT_TRUE(s.ok()) << s;
    ExpectClose(dout, out, {0.0f, 0.0f}, "Embedding");  // a copy: bit-exact

    // An id out of range is kOutOfRange, found on the device.
    if (id_type == DType::kI32) {
      ids.t.data_as<int32_t>()[5] = static_cast<int32_t>(vocab);
    } else {
      ids.t.data_as<int64_t>()[5] = -1;
    }
    ASSERT_TRUE(dids.buf.CopyFromHost(ids.bytes.data(), ids.t.nbytes()).ok());
    const Status bad = Embedding(dids.t, dtable.t, dout.t);
    EXPECT_EQ(bad.code(), StatusCode::kOutOfRange) << bad;
    EXPECT_NE(bad.message().find("ids[5]"), std::string_view::npos) << bad;
  }
}

TEST_P(GpuOpTest, LayerNormAndRmsNorm) {
  for (int64_t h : {7, 384, 2500}) {  // warp-per-row and block-per-row kernels
    Host x({3, 5, h}, dt()), gamma({h}, dt()), beta({h}, dt()), y({3, 5, h}, dt()),
        y2({3, 5, h}, dt());
    FillRandom(x, rng_, -2.0f, 3.0f);
    FillRandom(gamma, rng_, 0.5f, 1.5f);
    FillRandom(beta, rng_);
    ARCHI_UPLOAD(dx, x);
    ARCHI_UPLOAD(dgamma, gamma);
    ARCHI_UPLOAD(dbeta, beta);
    ARCHI_UPLOAD(dy, y);
    ASSERT_TRUE(LayerNorm(x.t, gamma.t, beta.t, 1e-5f, y.t, CpuCtx()).ok());
    ASSERT_TRUE(RmsNorm(x.t, gamma.t, 1e-6f, y2.t, CpuCtx()).ok());
    Status s = LayerNorm(dx.t, dgamma.t, dbeta.t, 1e-5f, dy.t);
    ASSERT_TRUE(s.ok()) << s;
    ExpectClose(dy, y, tol(), "LayerNorm h=" + std::to_string(h));
    s = RmsNorm(dx.t, dgamma.t, 1e-6f, dx.t);  // in place
    ASSERT_TRUE(s.ok()) << s;
    ExpectClose(dx, y2, tol(), "RmsNorm (in place) h=" + std::to_string(h));
  }
}

TEST_P(GpuOpTest, Activations) {
  const std::vector<int64_t> shape = {4, 1001};
  Host x(shape, dt()), up(shape, dt()), want(shape, dt());
  FillRandom(x, rng_, -4.0f, 4.0f);
  FillRandom(up, rng_, -2.0f, 2.0f);
  ARCHI_UPLOAD(dx, x);
  ARCHI_UPLOAD(dup, up);
  ARCHI_UPLOAD(dy, want);
  for (GeluKind kind : {GeluKind::kErf, GeluKind::kTanh}) {
    ASSERT_TRUE(Gelu(x.t, want.t, kind, CpuCtx()).ok());
    const Status s = Gelu(dx.t, dy.t, kind);
    ASSERT_TRUE(s.ok()) << s;
    ExpectClose(dy, want, tol(), kind == GeluKind::kErf ? "GeluErf" : "GeluTanh");
  }
  ASSERT_TRUE(Silu(x.t, want.t, CpuCtx()).ok());
  Status s = Silu(dx.t, dy.t);
  ASSERT_TRUE(s.ok()) << s;
  ExpectClose(dy, want, tol(), "Silu");
  ASSERT_TRUE(SwiGlu(x.t, up.t, want.t, CpuCtx()).ok());
  s = SwiGlu(dx.t, dup.t, dy.t);
  ASSERT_TRUE(s.ok()) << s;
  ExpectClose(dy, want, tol(), "SwiGlu");
  ASSERT_TRUE(Add(x.t, up.t, want.t, CpuCtx()).ok());
  s = Add(dx.t, dup.t, dx.t);  // out aliases a
  ASSERT_TRUE(s.ok()) << s;
  ExpectClose(dx, want, tol(), "Add (in place)");
}

TEST_P(GpuOpTest, Softmax) {
  for (int64_t h : {1, 33, 1024, 4099}) {
    Host x({6, h}, dt()), y({6, h}, dt());
    FillRandom(x, rng_, -8.0f, 8.0f);
    ARCHI_UPLOAD(dx, x);
    ARCHI_UPLOAD(dy, y);
    ASSERT_TRUE(Softmax(x.t, y.t, CpuCtx()).ok());
    const Status s = Softmax(dx.t, dy.t);
    ASSERT_TRUE(s.ok()) << s;
    ExpectClose(dy, y, tol(), "Softmax h=" + std::to_string(h));
  }
}

// ---- attention ---------------------------------------------------------------------------------

struct AttnCase {
  int64_t b, hq, hkv, sq, skv, d;
  bool causal;
  bool lengths;
};

void CheckAttention(std::mt19937& rng, DType dt, Tolerance tol, const AttnCase& c) {
  Host q({c.b, c.hq, c.sq, c.d}, dt), k({c.b, c.hkv, c.skv, c.d}, dt),
      v({c.b, c.hkv, c.skv, c.d}, dt), out({c.b, c.hq, c.sq, c.d}, dt), lens({c.b}, DType::kI32);
  FillRandom(q, rng, -2.0f, 2.0f);
  FillRandom(k, rng, -2.0f, 2.0f);
  FillRandom(v, rng);
  for (int64_t i = 0; i < c.b; ++i) {
    lens.t.data_as<int32_t>()[i] = static_cast<int32_t>(std::max<int64_t>(1, c.skv - 7 * i));
  }
  ARCHI_UPLOAD(dq, q);
  ARCHI_UPLOAD(dk, k);
  ARCHI_UPLOAD(dv, v);
  ARCHI_UPLOAD(dout, out);
  ARCHI_UPLOAD(dlens, lens);
  AttentionOptions opts;
  opts.causal = c.causal;
  ASSERT_TRUE(Attention(q.t, k.t, v.t, c.lengths ? &lens.t : nullptr, out.t, opts, CpuCtx()).ok());
  const Status s = Attention(dq.t, dk.t, dv.t, c.lengths ? &dlens.t : nullptr, dout.t, opts);
  ASSERT_TRUE(s.ok()) << s;
  ExpectClose(dout, out, tol,
              "Attention b=" + std::to_string(c.b) + " hq=" + std::to_string(c.hq) +
                  " hkv=" + std::to_string(c.hkv) + " sq=" + std::to_string(c.sq) +
                  " skv=" + std::to_string(c.skv) + " d=" + std::to_string(c.d) +
                  (c.causal ? " causal" : "") + (c.lengths ? " lengths" : ""));
}

TEST_P(GpuOpTest, Attention) {
  const AttnCase cases[] = {
      {2, 4, 4, 13, 13, 32, false, true},   // encoder with padding
      {2, 4, 4, 70, 70, 64, false, false},  // several key tiles
      {1, 8, 2, 37, 37, 80, true, false},   // causal prefill, GQA, D not a multiple of 32
      {2, 4, 1, 3, 100, 128, true, true},   // causal with offset (Sq < Skv), MQA, padding
      {1, 2, 2, 1, 300, 256, true, false},  // decode, largest head dim (> 48 KiB smem)
      {3, 6, 3, 9, 40, 17, false, true},    // odd head dim
  };
  for (const AttnCase& c : cases) CheckAttention(rng_, dt(), tol(), c);
}

TEST_P(GpuOpTest, KvCachePrefillThenDecode) {
  const int64_t b = 2, hq = 4, hkv = 2, d = 64, max_seq = 48;
  Host kc({b, hkv, max_seq, d}, dt()), vc({b, hkv, max_seq, d}, dt());
  FillRandom(kc, rng_);  // garbage beyond `length` must never be read
  FillRandom(vc, rng_);
  ARCHI_UPLOAD(dkc, kc);
  ARCHI_UPLOAD(dvc, vc);
  KvCache cpu{kc.t, vc.t, 0};
  KvCache gpu{dkc.t, dvc.t, 0};
  for (int64_t step_len : {int64_t{21}, int64_t{1}, int64_t{1}, int64_t{5}}) {
    Host kn({b, hkv, step_len, d}, dt()), vn({b, hkv, step_len, d}, dt()),
        q({b, hq, step_len, d}, dt()), out({b, hq, step_len, d}, dt());
    FillRandom(kn, rng_);
    FillRandom(vn, rng_);
    FillRandom(q, rng_);
    ARCHI_UPLOAD(dkn, kn);
    ARCHI_UPLOAD(dvn, vn);
    ARCHI_UPLOAD(dq, q);
    ARCHI_UPLOAD(dout, out);
    ASSERT_TRUE(KvAppend(cpu, kn.t, vn.t, CpuCtx()).ok());
    Status s = KvAppend(gpu, dkn.t, dvn.t);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(gpu.length, cpu.length);
    ASSERT_TRUE(AttentionKv(q.t, cpu, out.t, {}, CpuCtx()).ok());
    s = AttentionKv(dq.t, gpu, dout.t);
    ASSERT_TRUE(s.ok()) << s;
    ExpectClose(dout, out, tol(), "AttentionKv at length " + std::to_string(cpu.length));
  }
  ExpectClose(dkc, kc, {0.0f, 0.0f}, "KvAppend k cache");  // copies: bit-exact
  ExpectClose(dvc, vc, {0.0f, 0.0f}, "KvAppend v cache");
}

TEST_P(GpuOpTest, Rotary) {
  for (int64_t offset : {int64_t{0}, int64_t{1000}}) {
    Host x({2, 3, 11, 64}, dt());
    FillRandom(x, rng_);
    ARCHI_UPLOAD(dx, x);
    ASSERT_TRUE(Rotary(x.t, offset, 10000.0f, CpuCtx()).ok());
    const Status s = Rotary(dx.t, offset, 10000.0f);
    ASSERT_TRUE(s.ok()) << s;
    // Large positions: sin/cos of arguments ~1e3 differ by a few f32 ulp between host and device.
    const Tolerance t = dt() == DType::kF32 ? Tolerance{5e-4f, 5e-4f} : tol();
    ExpectClose(dx, x, t, "Rotary offset=" + std::to_string(offset));
  }
}

// ---- pooling
// -------------------------------------------------------------------------------------

TEST_P(GpuOpTest, MeanPoolAndL2Normalize) {
  const int64_t b = 4, s = 9, h = 50;
  Host x({b, s, h}, dt()), lens({b}, DType::kI32), pooled({b, h}, dt()), normed({b, h}, dt());
  FillRandom(x, rng_);
  const int32_t lv[] = {9, 1, 5, 0};  // full, one token, partial, empty (zeros)
  std::memcpy(lens.bytes.data(), lv, sizeof(lv));
  ARCHI_UPLOAD(dx, x);
  ARCHI_UPLOAD(dlens, lens);
  ARCHI_UPLOAD(dpooled, pooled);
  for (bool with_lengths : {true, false}) {
    ASSERT_TRUE(MeanPool(x.t, with_lengths ? &lens.t : nullptr, pooled.t, CpuCtx()).ok());
    const Status st = MeanPool(dx.t, with_lengths ? &dlens.t : nullptr, dpooled.t);
    ASSERT_TRUE(st.ok()) << st;
    ExpectClose(dpooled, pooled, tol(), with_lengths ? "MeanPool lengths" : "MeanPool");
  }
  ASSERT_TRUE(L2Normalize(pooled.t, normed.t, 1e-12f, CpuCtx()).ok());
  const Status st = L2Normalize(dpooled.t, dpooled.t, 1e-12f);  // in place
  ASSERT_TRUE(st.ok()) << st;
  ExpectClose(dpooled, normed, tol(), "L2Normalize (in place)");
  // Long rows take the block-per-row kernel.
  Host wide({3, 5000}, dt()), wide_out({3, 5000}, dt());
  FillRandom(wide, rng_);
  ARCHI_UPLOAD(dwide, wide);
  ASSERT_TRUE(L2Normalize(wide.t, wide_out.t, 1e-12f, CpuCtx()).ok());
  const Status st2 = L2Normalize(dwide.t, dwide.t, 1e-12f);
  ASSERT_TRUE(st2.ok()) << st2;
  ExpectClose(dwide, wide_out, tol(), "L2Normalize h=5000");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuOpTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

}  // namespace
}  // namespace archi::kernels
