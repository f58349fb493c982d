#include "bench/encode/encode_bench.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "runtime/core/params.h"
#include "runtime/model/bert.h"
#include "runtime/model/model.h"
#include "runtime/model/wordpiece.h"

namespace archi::bench {
namespace {

// Typical sentence-embedding inputs: 10..40 tokens each.
const char* const kSentences[] = {
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner while people walk by.",
    "How do I reset my password if I no longer have access to my email account?",
    "The restaurant near the station serves excellent pasta but the service is slow.",
    "Scientists have discovered a new species of frog in the rainforests of Peru.",
    "Our quarterly revenue grew by twelve percent, driven mostly by the cloud business.",
    "Please remember to water the plants and feed the cat while I am away.",
    "The train to Berlin was delayed by two hours because of a signal failure.",
    "What is the difference between a virus and a bacterium?",
    "She finished the marathon in under four hours despite the heat.",
    "Distributed systems must tolerate the failure of individual machines.",
    "The museum is closed on Mondays and public holidays.",
    "He spent the weekend repairing the old wooden fence behind the house.",
    "Can you recommend a good book about the history of mathematics?",
    "The new smartphone has a larger battery and a faster processor than last year's model.",
    "Heavy rain is expected across the northern regions tomorrow afternoon.",
    "Children learn languages more easily than adults, according to many studies.",
    "The committee postponed its decision until more data becomes available.",
    "I would like to book a table for four people at seven o'clock tonight.",
    "The software update fixes several security vulnerabilities and improves performance.",
    "Bees play an essential role in pollinating many of the crops we eat.",
    "The lecture covered the basics of linear algebra and its applications in machine learning.",
    "After years of negotiations, the two countries finally signed a trade agreement.",
    "Turn left at the second traffic light and the pharmacy will be on your right.",
    "The orchestra performed Beethoven's ninth symphony to a sold-out audience.",
    "Why does the sky appear blue during the day and red at sunset?",
    "The startup raised fifty million dollars in its latest funding round.",
    "Regular exercise and a balanced diet reduce the risk of heart disease.",
    "The old bridge will be replaced by a wider one with separate bicycle lanes.",
    "Our team meets every Tuesday morning to review the progress of the project.",
    "The library offers free workshops on programming for beginners.",
    "Volcanic eruptions can affect global temperatures for several years.",
};

using Clock = std::chrono::steady_clock;

struct Row {
  int batch = 0;
  double archi = 0;  // sentences/s
  int archi_iters = 0;
  double torch = 0;  // 0: not measured
};

std::vector<std::vector<std::vector<int32_t>>> MakeBatches(
    const std::vector<std::vector<int32_t>>& ids, int b) {
  std::vector<std::vector<std::vector<int32_t>>> out;
  const size_t n = std::max<size_t>(1, ids.size() / static_cast<size_t>(b));
  for (size_t i = 0; i < n; ++i) {
    std::vector<std::vector<int32_t>> batch;
    for (int j = 0; j < b; ++j) batch.push_back(ids[(i * b + j) % ids.size()]);
    out.push_back(std::move(batch));
  }
  return out;
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

int RunEncode(EncodeOptions o) {
  if (o.model_dir.empty()) o.model_dir = EnvString("ARCHI_MINILM_DIR", ARCHI_MINILM_DEFAULT_DIR);
  const MachineInfo mi = GetMachineInfo();
  const int threads = o.threads > 0 ? o.threads : mi.nproc;
  if (o.quick) {
    o.target_s = std::min(o.target_s, 0.2);
    o.rounds = 1;
  }
  const std::vector<int> batch_sizes =
      o.quick ? std::vector<int>{1, 8} : std::vector<int>{1, 8, 32};

  auto fail = [](const Status& s) {
    std::fprintf(stderr, "archi-bench encode: %s\n", s.ToString().c_str());
    return 1;
  };
  auto tok = model::WordPieceTokenizer::Load(o.model_dir + "/vocab.txt", {.max_length = 256});
  if (!tok.ok()) {
    std::fprintf(stderr,
                 "archi-bench encode: no model in %s (get it with scripts/fetch_model.sh "
                 "BUILD_DIR or set ARCHI_MINILM_DIR)\n",
                 o.model_dir.c_str());
    return fail(tok.status());
  }
  auto model = model::Model::Load(o.model_dir);
  if (!model.ok()) return fail(model.status());
  auto enc = model::BertEncoder::Create(*model, {.num_threads = threads});
  if (!enc.ok()) return fail(enc.status());
  std::vector<std::vector<int32_t>> ids;
  size_t total_tokens = 0;
  for (const char* s : kSentences) {
    auto r = (*tok)->Encode(s);
    if (!r.ok()) return fail(r.status());
    total_tokens += r->size();
    ids.push_back(std::move(*r));
  }

  // Rounds alternate the engines (archi: every batch size, then torch: every batch size), and
  // each cell keeps its best round: other processes on the machine only ever slow a run down.
  std::vector<Row> rows;
  for (int b : batch_sizes) rows.push_back({b, 0, 0, 0});
  std::string torch_versions;
  bool torch_ok = !o.torch_python.empty();
  for (int round = 0; round < o.rounds; ++round) {
    for (Row& row : rows) {
      const auto batches = MakeBatches(ids, row.batch);
      for (size_t i = 0; i < std::min<size_t>(2, batches.size()); ++i) {
        if (auto r = (*enc)->Encode(batches[i]); !r.ok()) return fail(r.status());  // warm-up
      }
      int iters = 0;
      double elapsed = 0;
      const auto t0 = Clock::now();
      while (true) {
        auto r = (*enc)->Encode(batches[static_cast<size_t>(iters) % batches.size()]);
        if (!r.ok()) return fail(r.status());
        ++iters;
        elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
        if (elapsed >= o.target_s && iters >= 3) break;
      }
      const double rate = double(iters) * row.batch / elapsed;
      row.archi = std::max(row.archi, rate);
      std::printf("[encode] round %d archi batch %2d: %.1f sentences/s (%d iterations)\n", round,
                  row.batch, rate, iters);
      std::fflush(stdout);
    }
    if (!torch_ok) continue;
    Status st = MakeDirs(o.out_dir);
    if (!st.ok()) return fail(st);
    const std::string req_path = o.out_dir + "/encode_torch_request.json";
    const std::string res_path = o.out_dir + "/encode_torch_result.json";
    nlohmann::json req = {{"ids", ids},
                          {"batches", batch_sizes},
                          {"threads", threads},
                          {"target_s", o.target_s},
                          {"model_dir", o.torch_model}};
    st = WriteFile(req_path, req.dump());
    if (!st.ok()) return fail(st);
    std::remove(res_path.c_str());
    const std::string cmd = Quote(o.torch_python) + " " + Quote(ARCHI_TORCH_ENCODE_SCRIPT) + " " +
                            Quote(req_path) + " " + Quote(res_path);
    std::printf("[encode] round %d torch: %s\n", round, cmd.c_str());
    std::fflush(stdout);
    const int rc = std::system(cmd.c_str());
    std::ifstream in(res_path);
    if (rc != 0 || !in) {
      std::fprintf(stderr, "archi-bench encode: the torch run failed (exit %d); no comparison\n",
                   rc);
      torch_ok = false;
    } else {
      try {
        const auto res = nlohmann::json::parse(in);
        const auto& v = res.at("versions");
        torch_versions =
            Fmt("torch %s, transformers %s, %d threads", v.at("torch").get<std::string>().c_str(),
                v.at("transformers").get<std::string>().c_str(), v.at("threads").get<int>());
        for (const auto& r : res.at("results")) {
          for (Row& row : rows) {
            if (row.batch != r.at("batch").get<int>()) continue;
            const double rate = r.at("sentences_per_s").get<double>();
            row.torch = std::max(row.torch, rate);
            std::printf("[encode] round %d torch batch %2d: %.1f sentences/s\n", round, row.batch,
                        rate);
          }
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "archi-bench encode: bad torch result: %s\n", e.what());
        torch_ok = false;
      }
    }
    std::remove(req_path.c_str());
    std::remove(res_path.c_str());
  }
  if (!torch_ok) {
    for (Row& row : rows) row.torch = 0;
  }

  MarkdownTable table({"batch", "archi sentences/s", "torch sentences/s", "archi/torch"},
                      {true, true, true, true});
  std::string csv = "batch,archi_sentences_per_s,torch_sentences_per_s,ratio\n";
  for (const Row& r : rows) {
    const bool t = r.torch > 0;
    table.AddRow({std::to_string(r.batch), Fmt("%.1f", r.archi), t ? Fmt("%.1f", r.torch) : "-",
                  t ? Fmt("%.2f", r.archi / r.torch) : "-"});
    csv += Fmt("%d,%.3f,%s,%s\n", r.batch, r.archi, t ? Fmt("%.3f", r.torch).c_str() : "",
               t ? Fmt("%.4f", r.archi / r.torch).c_str() : "");
  }
  std::string md = "## archi-bench encode: all-MiniLM-L6-v2 sentence embeddings on the CPU\n\n";
  md += Fmt("- %s; load average %s; %s\n", DescribeMachine(mi).c_str(), LoadAverage1().c_str(),
            NowUtc().c_str());
  md +=
      Fmt("- %d threads for both engines; %zu sentences, %.1f tokens on average, padded per "
          "batch; tokenisation not timed; %d rounds alternating the engines, %.1f s per "
          "measurement, each cell the best round\n",
          threads, ids.size(), double(total_tokens) / double(ids.size()), o.rounds, o.target_s);
  md +=
      "- archi: `BertEncoder::Encode` (kernels/ops.h CPU ops); torch: "
      "`transformers.BertModel` + mean pooling + L2 norm, `torch.inference_mode()`" +
      (torch_versions.empty() ? std::string(" (not run: pass --torch-python)")
                              : " (" + torch_versions + ")") +
      "\n";
  md += "- command: `" + JoinArgs(o.command) + "`\n\n" + table.ToString();
  std::printf("\n%s", md.c_str());
  std::fflush(stdout);

  Status st = MakeDirs(o.out_dir);
  if (!st.ok()) return fail(st);
  if (st = WriteFile(o.out_dir + "/encode.md", md); !st.ok()) return fail(st);
  if (st = WriteFile(o.out_dir + "/encode.csv", csv); !st.ok()) return fail(st);
  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  const std::string gp =
      Fmt("# Generated by archi-bench encode; regenerate with: gnuplot encode.gp\n"
          "set terminal %s size 800,480\n"
          "set output 'encode.png'\n"
          "set datafile separator ','\n"
          "set style data histograms\n"
          "set style histogram clustered gap 1\n"
          "set style fill solid 0.8 border -1\n"
          "set grid ytics\n"
          "set key top left\n"
          "set xlabel 'batch size'\n"
          "set ylabel 'sentences/s'\n"
          "set yrange [0:*]\n"
          "set title \"all-MiniLM-L6-v2 encode (%s, %d threads)\" noenhanced\n"
          "plot 'encode.csv' every ::1 using 2:xtic(1) title 'archi', '' every ::1 using 3 title "
          "'torch'\n",
          term.c_str(), mi.cpu_model.c_str(), threads);
  const bool png =
      WriteFile(o.out_dir + "/encode.gp", gp).ok() && RunGnuplot(o.out_dir + "/encode.gp").ok();
  std::printf("\n[encode] wrote %s/{encode.md,encode.csv%s}\n", o.out_dir.c_str(),
              png ? ",encode.gp,encode.png" : "");
  return 0;
}

}  // namespace archi::bench
