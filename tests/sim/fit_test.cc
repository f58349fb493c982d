// Fitting: parameters recovered from samples of known distributions (tolerances from the MLE's
// asymptotic standard error at the sample size), the KS choice, and fits to the shared arrival
// traces whose generator is documented (gamma with shape 1000 / (tpt x N), scale N ms).
#include "bench/sim/fit.h"

#include <gsl/gsl_sf_psi.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "bench/sim/traces.h"

namespace archi::sim {
namespace {

constexpr size_t kN = 20'000;
// Every check allows 5 standard errors: a correct fit fails one with probability ~6e-7.
constexpr double kZ = 5;

TEST(FitTest, ExponentialRecovered) {
  auto x = Generate(Distribution::Exponential(2.5), kN, 1);
  auto f = FitExponential(x);
  ASSERT_TRUE(f.ok()) << f.status();
  // SE(rate) = rate / sqrt(n).
  EXPECT_NEAR(f->dist.a, 2.5, kZ * 2.5 / std::sqrt(kN));
  auto best = FitBest(x);
  ASSERT_TRUE(best.ok());
  EXPECT_EQ(best->best().dist.kind, DistKind::kExponential) << best->ToMarkdown();
  EXPECT_GE(best->best().ks_p, 0.05);
  // The gamma fit of exponential data has shape near 1.
  EXPECT_NEAR(best->candidates[1].dist.a, 1.0, 0.05);
}

TEST(FitTest, GammaRecovered) {
  for (double shape : {0.5, 4.0, 50.0}) {
    SCOPED_TRACE(shape);
    const double scale = 3.0;
    auto x = Generate(Distribution::Gamma(shape, scale), kN, 7);
    auto f = FitGamma(x);
    ASSERT_TRUE(f.ok()) << f.status();
    // Var(k_hat) = k / (n (k psi'(k) - 1)) asymptotically; the mean k*theta has SE k theta/sqrt(nk).
    double se_k = std::sqrt(shape / (kN * (shape * gsl_sf_psi_1(shape) - 1)));
    EXPECT_NEAR(f->dist.a, shape, kZ * se_k);
    EXPECT_NEAR(f->dist.Mean(), shape * scale, kZ * shape * scale / std::sqrt(kN * shape));
    auto best = FitBest(x);
    ASSERT_TRUE(best.ok());
    EXPECT_EQ(best->best().dist.kind, DistKind::kGamma) << best->ToMarkdown();
  }
}

TEST(FitTest, LognormalRecovered) {
  const double mu = 1.2, sigma = 0.8;
  auto x = Generate(Distribution::Lognormal(mu, sigma), kN, 11);
  auto f = FitLognormal(x);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_NEAR(f->dist.a, mu, kZ * sigma / std::sqrt(kN));
  EXPECT_NEAR(f->dist.b, sigma, kZ * sigma / std::sqrt(2.0 * kN));
  auto best = FitBest(x);
  ASSERT_TRUE(best.ok());
  EXPECT_EQ(best->best().dist.kind, DistKind::kLognormal) << best->ToMarkdown();
  // The wrong families are rejected at this sample size.
  EXPECT_LT(best->candidates[0].ks_p, 0.05);
}

TEST(FitTest, KsAgainstTheTrueDistribution) {
  // D of a sample against its own distribution is small (p well spread); against a shifted one
  // it is large.
  auto x = Generate(Distribution::Gamma(2, 1), 5'000, 3);
  double d_true = KsStatistic(x, Distribution::Gamma(2, 1));
  double d_wrong = KsStatistic(x, Distribution::Gamma(2, 1.3));
  EXPECT_LT(d_true, 1.63 / std::sqrt(5000.0));  // 1% critical value
  EXPECT_GT(d_wrong, 0.05);
  EXPECT_LT(KsPValue(d_wrong, 5000), 1e-6);
  EXPECT_NEAR(KsPValue(1.36 / std::sqrt(5000.0), 5000), 0.05, 0.005);
}

TEST(FitTest, DeterministicGeneration) {
  EXPECT_EQ(Generate(Distribution::Gamma(2, 1), 100, 5), Generate(Distribution::Gamma(2, 1), 100, 5));
  EXPECT_NE(Generate(Distribution::Gamma(2, 1), 100, 5), Generate(Distribution::Gamma(2, 1), 100, 6));
}

TEST(FitTest, BadInput) {
  EXPECT_FALSE(FitBest({1.0}).ok());
  EXPECT_FALSE(FitBest({1.0, 0.0, 2.0}).ok());
  EXPECT_FALSE(FitBest({1.0, -1.0}).ok());
  EXPECT_FALSE(FitGamma({2.0, 2.0, 2.0}).ok());
  EXPECT_FALSE(Distribution::Parse("gamma:1").ok());
  EXPECT_FALSE(Distribution::Parse("weibull:1,2").ok());
  EXPECT_FALSE(Distribution::Parse("exp:x").ok());
  auto d = Distribution::Parse("gamma:2,0.5");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->kind, DistKind::kGamma);
  EXPECT_DOUBLE_EQ(d->Mean(), 1.0);
}

TEST(FitTest, SharedArrivalTraces) {
  const std::string dir = std::string(ARCHI_SHARED_DATA_DIR) + "/spotserve/elastic-switch/trace/query/";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << "no shared data at " << dir;
  // query_tpt0.35_cv6: gamma gaps with shape 1000 / (0.35 * 6) = 476.2 and scale 6 ms.
  auto a = LoadArrivals(dir + "query_tpt0.35_cv6.txt");
  ASSERT_TRUE(a.ok()) << a.status();
  std::vector<double> gaps_ms;
  for (double g : InterArrivals(a->time_s)) gaps_ms.push_back(g * 1000);
  auto f = FitBest(gaps_ms);
  ASSERT_TRUE(f.ok()) << f.status();
  const double k = 1000 / (0.35 * 6);
  const double n = static_cast<double>(gaps_ms.size());
  // For large k, SE(k_hat) ~ k sqrt(2 / n).
  EXPECT_NEAR(f->candidates[1].dist.a, k, kZ * k * std::sqrt(2 / n)) << f->ToMarkdown();
  EXPECT_NEAR(f->candidates[1].dist.b, 6.0, kZ * 6.0 * std::sqrt(2 / n));
  EXPECT_NE(f->best().dist.kind, DistKind::kExponential) << f->ToMarkdown();
  // query_tpt1: Poisson arrivals (CV about 1): exponential passes and is chosen.
  auto p = LoadArrivals(dir + "query_tpt1.txt");
  ASSERT_TRUE(p.ok()) << p.status();
  auto fp = FitBest(InterArrivals(p->time_s));
  ASSERT_TRUE(fp.ok()) << fp.status();
  EXPECT_EQ(fp->best().dist.kind, DistKind::kExponential) << fp->ToMarkdown();
  EXPECT_NEAR(1.0 / fp->best().dist.a, 1029.9 / 1023, 0.01);
}

}  // namespace
}  // namespace archi::sim
