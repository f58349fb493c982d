// Helpers for communicator tests: ranks as threads over one store.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "runtime/core/memory_store.h"

namespace archi::testing {

inline std::string UniquePrefix() {
  static std::atomic<int> counter{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info ? info->name() : "t") + "-" + std::to_string(counter++);
}

// Creates `n` communicators (one per rank, concurrently) over `store` under a fresh prefix.
inline std::vector<std::unique_ptr<Communicator>> MakeComms(
    int n, std::shared_ptr<Store> store, CommOptions options = {},
    std::vector<CommOptions> per_rank = {}) {
  const std::string prefix = UniquePrefix();
  std::vector<std::unique_ptr<Communicator>> comms(n);
  std::vector<Status> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      CommOptions o = per_rank.empty() ? options : per_rank[r];
      auto c = CreateCommunicator(BackendKind::kGloo, r, n,
                                  std::make_shared<PrefixStore>(store, prefix), o);
      if (c.ok()) {
        comms[r] = std::move(c).value();
      } else {
        errors[r] = c.status();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_TRUE(errors[r].ok()) << "rank " << r << ": " << errors[r];
  return comms;
}

inline Tensor MakeTensor(std::vector<int64_t> shape, DType dtype) {
  auto t = Tensor::Empty(std::move(shape), dtype);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Tensor();
}

inline void FillRandom(Tensor& t, uint32_t seed) {
  std::mt19937 gen(seed);
  auto* p = static_cast<uint8_t*>(t.data());
  size_t i = 0;
  for (; i + 4 <= t.nbytes(); i += 4) {
    uint32_t v = gen();
    std::memcpy(p + i, &v, 4);
  }
  for (; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(gen());
}

inline bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
}

// Runs fn(rank) on one thread per rank and joins them.
inline void RunRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

inline Status WaitFor(const std::shared_ptr<Work>& w, int64_t ms = 10'000) {
  return w->Wait(Deadline::AfterMs(ms));
}

}  // namespace archi::testing
