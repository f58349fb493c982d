// The policy registry: the one name -> factory list used by archi-coordinator and archi-sim.
#include "runtime/policy/registry.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace archi::policy {
namespace {

TEST(PolicyRegistry, NamesAreSortedAndComplete) {
  EXPECT_EQ(PolicyNames(), (std::vector<std::string>{"combined", "cost-capacity", "harmony", "parcae", "reactive"}));
  EXPECT_EQ(PolicyNamesJoined(), "combined | cost-capacity | harmony | parcae | reactive");
}

TEST(PolicyRegistry, MakesEachNamedPolicy) {
  PolicyOptions o;  // harmony and combined need a latency model
  o.harmony.model.gpu.l1 = 0.001;
  o.harmony.model.gpu.l2 = 0.01;
  o.combined.batching.model = o.harmony.model;
  for (const std::string& n : PolicyNames()) {
    auto p = MakePolicy(n, o);
    ASSERT_TRUE(p.ok()) << n << ": " << p.status().ToString();
    EXPECT_EQ((*p)->name(), n);
  }
}

TEST(PolicyRegistry, UnknownNameIsInvalidArgument) {
  for (const char* n : {"", "none", "Reactive", "static", "harmonybatch"}) {
    auto p = MakePolicy(n);
    ASSERT_FALSE(p.ok()) << n;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << n;
    EXPECT_NE(p.status().message().find("combined, cost-capacity, harmony, parcae, reactive"), std::string::npos)
        << p.status().ToString();
  }
}

TEST(PolicyRegistry, OptionsAreValidatedAndPassedOn) {
  PolicyOptions o;
  o.reactive.scale_in_below = -1;  // nonsense
  auto bad = MakePolicy("reactive", o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);

  PolicyOptions p;
  p.parcae.horizon = 3;
  auto good = MakePolicy("parcae", p);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  const auto* parcae = dynamic_cast<const ParcaePolicy*>(good->get());
  ASSERT_NE(parcae, nullptr);
  EXPECT_EQ(parcae->options().horizon, 3);

  // harmony without a model is refused.
  auto no_model = MakePolicy("harmony");
  ASSERT_FALSE(no_model.ok());
  EXPECT_EQ(no_model.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace archi::policy
