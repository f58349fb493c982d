// `archi-bench kernels`: CPU kernel throughput against references measured in the same run.
//   - GEMM GFLOP/s of archi::kernels::Gemm (f32, bf16) for the shapes of the real model
//     (all-MiniLM-L6-v2: H=384, I=1536, M = batch*128 tokens) and of a 7B decoder layer
//     (H=4096, I=11008, M=1..512), against oneDNN called directly (its matmul primitive and
//     dnnl_sgemm; "library best" is the faster of the two) and OpenBLAS cblas_sgemm; plus a
//     peak estimate (cores x 32 f32 FLOP/cycle x the nominal clock in /proc/cpuinfo).
//   - memory-bound ops (add, activations, norms, softmax, pooling, attention) in GB/s of bytes
//     read + written, against a multi-threaded memcpy of the same size.
// Output: markdown (stdout and OUT/kernels.md), OUT/kernels.csv, OUT/kernels.png. Timings are
// reported, never asserted.
#pragma once

#include <string>
#include <vector>

namespace archi::bench {

struct KernelsOptions {
  std::string out_dir = "docs/bench";
  bool quick = false;      // smoke run: small shapes, short timings
  int threads = 0;         // KernelContext::num_threads and the libraries' thread count (0: all)
  double target_s = 0.4;   // seconds each measurement aims at (at least 3 calls)
  std::vector<std::string> command;
};

// Runs the benchmark; returns the process exit code.
int RunKernels(KernelsOptions options);

}  // namespace archi::bench
