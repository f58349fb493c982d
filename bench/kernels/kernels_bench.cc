#include "bench/kernels/kernels_bench.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dnnl.hpp>
#include <fstream>
#include <functional>
#include <random>

#include "bench/bench_util.h"
#include "kernels/common/numeric.h"
#include "kernels/ops.h"

namespace archi::bench {
namespace {

using Clock = std::chrono::steady_clock;
namespace k = archi::kernels;

// Median seconds per call: runs f until target_s has passed (at least 3 calls, after 1 warm-up).
double TimeCall(const std::function<void()>& f, double target_s) {
  f();
  std::vector<double> t;
  const auto start = Clock::now();
  while (t.size() < 3 || (std::chrono::duration<double>(Clock::now() - start).count() < target_s &&
                          t.size() < 2000)) {
    const auto a = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
  }
  return Median(t);
}

Tensor MustEmpty(std::vector<int64_t> shape, DType d) {
  auto r = Tensor::Empty(std::move(shape), d);
  if (!r.ok()) {
    std::fprintf(stderr, "archi-bench kernels: %s\n", r.status().ToString().c_str());
    std::exit(1);
  }
  return *r;
}

void FillRandom(Tensor& t) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = u(rng);
    if (t.dtype() == DType::kF32) t.data_as<float>()[i] = v;
    else if (t.dtype() == DType::kBF16) t.data_as<uint16_t>()[i] = k::FloatToBf16(v);
    else if (t.dtype() == DType::kF16) t.data_as<uint16_t>()[i] = k::FloatToHalf(v);
  }
}

void Check(const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "archi-bench kernels: %s\n", s.ToString().c_str());
    std::exit(1);
  }
}

struct Row {
  std::string section, name, shape, dtype;
  double ours = 0, ref = 0, extra = 0;  // GEMM: GFLOP/s ours, library best, OpenBLAS
  std::string ref_name, unit;
};

double PeakGflops(int threads) {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  double mhz = 0;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      mhz = std::atof(line.substr(line.find(':') + 1).c_str());
      break;
    }
  }
  return threads * 32.0 * mhz / 1000.0;  // 2 x 256-bit FMA (or 1 x 512-bit x2) = 32 FLOP/cycle
}

}  // namespace

int RunKernels(KernelsOptions o) {
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  if (o.quick) o.target_s = std::min(o.target_s, 0.02);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  const k::KernelContext ctx{o.threads};
  const std::string load_start = LoadAverage1();
  std::vector<Row> rows;

  // ---- GEMM ----
  struct Shape {
    const char* model;
    int64_t m, n, k;
  };
  std::vector<Shape> shapes = {
      {"MiniLM", 128, 384, 384},    {"MiniLM", 128, 1536, 384},   {"MiniLM", 128, 384, 1536},
      {"MiniLM", 1024, 1536, 384},  {"MiniLM", 4096, 384, 384},   {"MiniLM", 4096, 1536, 384},
      {"MiniLM", 4096, 384, 1536},  {"7B", 1, 4096, 4096},        {"7B", 1, 11008, 4096},
      {"7B", 1, 4096, 11008},       {"7B", 32, 4096, 4096},       {"7B", 32, 11008, 4096},
      {"7B", 512, 4096, 4096},      {"7B", 512, 11008, 4096},     {"7B", 512, 4096, 11008}};
  if (o.quick) shapes = {{"MiniLM", 128, 384, 384}, {"7B", 1, 1024, 1024}, {"MiniLM", 32, 1536, 384}};
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  for (const Shape& s : shapes) {
    const double flops = 2.0 * s.m * s.n * s.k;
    for (DType dt : {DType::kF32, DType::kBF16}) {
      Tensor a = MustEmpty({s.m, s.k}, dt), w = MustEmpty({s.n, s.k}, dt), c = MustEmpty({s.m, s.n}, dt);
      FillRandom(a);
      FillRandom(w);
      const double ours = TimeCall([&] { Check(k::Gemm(a, w, nullptr, c, {}, ctx)); }, o.target_s);
      using ddt = dnnl::memory::data_type;
      using tag = dnnl::memory::format_tag;
      const ddt t = dt == DType::kF32 ? ddt::f32 : ddt::bf16;
      dnnl::memory::desc ad({s.m, s.k}, t, tag::ab), bd({s.k, s.n}, t, tag::ba), cd({s.m, s.n}, t, tag::ab);
      dnnl::matmul mm(dnnl::matmul::primitive_desc(dnnl::matmul::desc(ad, bd, cd), eng));
      dnnl::memory am(ad, eng, a.data()), bm(bd, eng, w.data()), cm(cd, eng, c.data());
      const double lib_mm = TimeCall(
          [&] {
            mm.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
            strm.wait();
          },
          o.target_s);
      double lib_best = lib_mm;
      std::string best_name = "oneDNN matmul";
      double blas = 0;
      if (dt == DType::kF32) {
        const double lib_sgemm = TimeCall(
            [&] {
              dnnl_sgemm('N', 'T', s.m, s.n, s.k, 1.0f, a.data_as<float>(), s.k, w.data_as<float>(),
                         s.k, 0.0f, c.data_as<float>(), s.n);
            },
            o.target_s);
        if (lib_sgemm < lib_best) lib_best = lib_sgemm, best_name = "dnnl_sgemm";
        blas = TimeCall(
            [&] {
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.0f,
                          a.data_as<float>(), s.k, w.data_as<float>(), s.k, 0.0f,
                          c.data_as<float>(), s.n);
            },
            o.target_s);
      }
      Row r{"gemm", s.model, Fmt("%lldx%lldx%lld", (long long)s.m, (long long)s.n, (long long)s.k),
            std::string(DTypeName(dt)), flops / ours / 1e9, flops / lib_best / 1e9,
            blas > 0 ? flops / blas / 1e9 : 0, best_name, "GFLOP/s"};
      std::printf("[gemm] %-6s %-16s %-4s ours %7.1f  %s %7.1f  OpenBLAS %7.1f GFLOP/s\n",
                  r.name.c_str(), r.shape.c_str(), r.dtype.c_str(), r.ours, best_name.c_str(),
                  r.ref, r.extra);
      std::fflush(stdout);
      rows.push_back(r);
    }
  }

  // ---- memory-bound ops (f32, MiniLM-like rows of 384) ----
  const int64_t h = 384, nrows = o.quick ? 2048 : 40960;  // 15.7M floats = 60 MiB per tensor
  const int64_t n = nrows * h;
  Tensor x = MustEmpty({nrows, h}, DType::kF32), y = MustEmpty({nrows, h}, DType::kF32),
         z = MustEmpty({nrows, h}, DType::kF32), g = MustEmpty({h}, DType::kF32),
         b = MustEmpty({h}, DType::kF32);
  for (Tensor* t : {&x, &y, &z, &g, &b}) FillRandom(*t);
  const double bytes = static_cast<double>(n) * 4;
  const double memcpy_s = TimeCall(
      [&] {
        const int64_t chunks = threads;
#pragma omp parallel for num_threads(threads)
        for (int64_t i = 0; i < chunks; ++i) {
          const int64_t lo = n * i / chunks, hi = n * (i + 1) / chunks;
          std::memcpy(y.data_as<float>() + lo, x.data_as<float>() + lo, (hi - lo) * 4);
        }
      },
      o.target_s);
  const double memcpy_gbs = 2 * bytes / memcpy_s / 1e9;
  auto mem_op = [&](const char* name, double streams, const std::function<Status()>& f) {
    const double s = TimeCall([&] { Check(f()); }, o.target_s);
    Row r{"memory", name, Fmt("%lldx%lld", (long long)nrows, (long long)h), "f32",
          streams * bytes / s / 1e9, memcpy_gbs, 0, "memcpy", "GB/s"};
    std::printf("[mem] %-14s %7.2f GB/s (memcpy %.2f)\n", name, r.ours, memcpy_gbs);
    std::fflush(stdout);
    rows.push_back(r);
  };
  mem_op("Add", 3, [&] { return k::Add(x, y, z, ctx); });
  mem_op("GeluErf", 2, [&] { return k::Gelu(x, y, k::GeluKind::kErf, ctx); });
  mem_op("GeluTanh", 2, [&] { return k::Gelu(x, y, k::GeluKind::kTanh, ctx); });
  mem_op("Silu", 2, [&] { return k::Silu(x, y, ctx); });
  mem_op("SwiGlu", 3, [&] { return k::SwiGlu(x, y, z, ctx); });
  mem_op("LayerNorm", 2, [&] { return k::LayerNorm(x, g, b, 1e-5f, y, ctx); });
  mem_op("RmsNorm", 2, [&] { return k::RmsNorm(x, g, 1e-5f, y, ctx); });
  mem_op("Softmax", 2, [&] { return k::Softmax(x, y, ctx); });
  mem_op("L2Normalize", 2, [&] { return k::L2Normalize(x, y, 1e-12f, ctx); });
  {
    const int64_t bs = nrows / 128;
    auto xv = Tensor::View(x.data(), {bs, 128, h}, DType::kF32);
    auto ov = Tensor::View(y.data(), {bs, h}, DType::kF32);
    Check(xv.status());
    Check(ov.status());
    mem_op("MeanPool", 1, [&] { return k::MeanPool(*xv, nullptr, *ov, ctx); });
  }
  {
    // MiniLM attention: B=nrows/128 sequences, 12 heads of 32, S=128: q, k, v read, out written.
    const int64_t bs = nrows / 128;
    auto q = Tensor::View(x.data(), {bs, 12, 128, 32}, DType::kF32);
    auto kk = Tensor::View(y.data(), {bs, 12, 128, 32}, DType::kF32);
    auto out = Tensor::View(z.data(), {bs, 12, 128, 32}, DType::kF32);
    Check(q.status());
    Check(kk.status());
    Check(out.status());
    mem_op("Attention", 4, [&] { return k::Attention(*q, *kk, *kk, nullptr, *out, {}, ctx); });
  }

  // ---- report ----
  const MachineInfo mi = GetMachineInfo();
  const double peak = PeakGflops(threads);
  MarkdownTable gt({"model", "M x N x K", "dtype", "ours GFLOP/s", "library best", "ours / best",
                    "OpenBLAS sgemm", "ours / peak est."},
                   {false, false, false, true, true, true, true, true});
  MarkdownTable mt({"op", "shape", "ours GB/s", "memcpy GB/s", "ours / memcpy"},
                   {false, false, true, true, true});
  std::string csv = "section,name,shape,dtype,ours,reference,reference_name,openblas,unit,ratio\n";
  for (const Row& r : rows) {
    csv += Fmt("%s,%s,%s,%s,%.3f,%.3f,%s,%.3f,%s,%.4f\n", r.section.c_str(), r.name.c_str(),
               r.shape.c_str(), r.dtype.c_str(), r.ours, r.ref, r.ref_name.c_str(), r.extra,
               r.unit.c_str(), r.ours / r.ref);
    if (r.section == "gemm") {
      gt.AddRow({r.name, r.shape, r.dtype, Fmt("%.1f", r.ours),
                 Fmt("%.1f (%s)", r.ref, r.ref_name.c_str()), Fmt("%.2f", r.ours / r.ref),
                 r.extra > 0 ? Fmt("%.1f", r.extra) : "-",
                 peak > 0 ? Fmt("%.2f", r.ours / peak) : "-"});
    } else {
      mt.AddRow({r.name, r.shape, Fmt("%.2f", r.ours), Fmt("%.2f", r.ref),
                 Fmt("%.2f", r.ours / r.ref)});
    }
  }
  std::string md = "# archi-bench kernels\n\n";
  md += "- date: " + NowUtc() + "\n";
  md += "- machine: " + DescribeMachine(mi) + "\n";
  md += "- load average (1 min) at start / end: " + load_start + " / " + LoadAverage1() + "\n";
  md += "- command: `" + JoinArgs(o.command) + "`\n";
  md += Fmt("- threads: %d; median time per call over >= 3 calls (~%.2f s per measurement); "
            "peak estimate %.0f GFLOP/s (f32, %d threads x 32 FLOP/cycle x nominal clock)\n\n",
            threads, o.target_s, peak, threads);
  md += "## GEMM (c = a @ w^T, w in PyTorch Linear layout)\n\n" + gt.ToString();
  md += "\n## Memory-bound ops (f32; GB/s of bytes read + written)\n\n" + mt.ToString();
  std::printf("\n%s", md.c_str());

  const std::string& out = o.out_dir;
  auto ok = [](const Status& st) {
    if (!st.ok()) std::fprintf(stderr, "archi-bench kernels: %s\n", st.ToString().c_str());
    return st.ok();
  };
  if (!ok(MakeDirs(out))) return 1;
  ok(WriteFile(out + "/kernels.md", md));
  ok(WriteFile(out + "/kernels.csv", csv));
  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  const std::string gp = Fmt(
      "# Generated by archi-bench kernels; regenerate with: gnuplot kernels.gp\n"
      "set terminal %s size 1200,640\n"
      "set output 'kernels.png'\n"
      "set datafile separator ','\n"
      "set style fill solid 0.6\n"
      "set boxwidth 0.8\n"
      "set grid ytics\n"
      "set yrange [0:*]\n"
      "set xtics rotate by -60 noenhanced font ',8'\n"
      "set ylabel 'ours / reference'\n"
      "set title \"archi-bench kernels (%s, %d threads): GEMM vs library best, memory ops vs memcpy\" noenhanced\n"
      "set arrow from graph 0, first 0.85 to graph 1, first 0.85 nohead lc rgb 'red' dt 2\n"
      "set arrow from graph 0, first 0.60 to graph 1, first 0.60 nohead lc rgb 'blue' dt 2\n"
      "plot 'kernels.csv' every ::1 using 0:10:xtic(sprintf('%%s %%s %%s', strcol(2), strcol(3), strcol(4))) with boxes notitle\n",
      term.c_str(), mi.cpu_model.c_str(), threads);
  const bool png = ok(WriteFile(out + "/kernels.gp", gp)) && ok(RunGnuplot(out + "/kernels.gp"));
  std::printf("\n[kernels] wrote %s/{kernels.md,kernels.csv%s}\n", out.c_str(),
              png ? ",kernels.png" : "");
  return 0;
}

}  // namespace archi::bench
