// Distribution fitting, PipeSim's method: fit candidate distributions to a sample (inter-arrival
// times, service times) by maximum likelihood, pick one by the Kolmogorov-Smirnov test, and draw
// synthetic traces from it.
//
//   auto fit = FitBest(InterArrivals(arrivals.time_s));   // exponential, gamma, lognormal
//   std::vector<double> gaps = Generate(fit->best().dist, 1'000'000, seed);
//
// Maximum likelihood:
//   exponential  rate = 1 / mean
//   gamma        shape k solves log k - psi(k) = log(mean) - mean(log x) (Newton on GSL's digamma
//                and trigamma, from the Choi-Wette starting point), scale = mean / k
//   lognormal    mu = mean(log x), sigma^2 = mean((log x - mu)^2)
// CDFs and special functions come from GSL (gsl_cdf_*, gsl_sf_psi*); sampling uses the standard
// library's distributions on a caller-seeded std::mt19937_64 (deterministic for a given seed).
//
// Choice: KS statistic D = sup |F_n - F| against each fitted CDF, p-value from the asymptotic
// Kolmogorov distribution (approximate: the parameters were estimated from the same sample, so it
// is conservative). Among fits with p >= alpha the one with fewest parameters wins (exponential
// before the two-parameter ones), then the smallest D; when none passes, the smallest D.
//
// Thread safety: free functions and values.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace archi::sim {

enum class DistKind { kExponential, kGamma, kLognormal, kConstant };
std::string_view DistKindName(DistKind k);

struct Distribution {
  DistKind kind = DistKind::kExponential;
  // exponential: a = rate; gamma: a = shape, b = scale; lognormal: a = mu, b = sigma (of log x);
  // constant: a = the value.
  double a = 1, b = 0;

  static Distribution Exponential(double rate) { return {DistKind::kExponential, rate, 0}; }
  static Distribution Gamma(double shape, double scale) { return {DistKind::kGamma, shape, scale}; }
  static Distribution Lognormal(double mu, double sigma) { return {DistKind::kLognormal, mu, sigma}; }
  static Distribution Constant(double v) { return {DistKind::kConstant, v, 0}; }
  // Gamma with the given mean and coefficient of variation (cv 0 -> constant).
  static Distribution GammaMeanCv(double mean, double cv);

  double Mean() const;
  double Cdf(double x) const;
  int Parameters() const;  // free parameters (for the choice rule)
  std::string ToString() const;  // "gamma(shape=476.2, scale=6.001)"
  // "exp:RATE", "gamma:SHAPE,SCALE", "lognormal:MU,SIGMA", "const:V"
  static Result<Distribution> Parse(const std::string& spec);
};

// Draws from a distribution without allocating; one object per stream.
class Sampler {
 public:
  explicit Sampler(const Distribution& d);
  double operator()(std::mt19937_64& rng);

 private:
  Distribution d_;
  std::exponential_distribution<double> exp_;
  std::gamma_distribution<double> gamma_;
  std::lognormal_distribution<double> lognormal_;
};

struct FitResult {
  Distribution dist;
  double log_likelihood = 0;
  double ks_d = 0;
  double ks_p = 0;
};

Result<FitResult> FitExponential(const std::vector<double>& sample);
Result<FitResult> FitGamma(const std::vector<double>& sample);
Result<FitResult> FitLognormal(const std::vector<double>& sample);

struct FitReport {
  std::vector<FitResult> candidates;  // exponential, gamma, lognormal
  size_t best_index = 0;
  size_t n = 0;
  double alpha = 0.05;
  const FitResult& best() const { return candidates[best_index]; }
  std::string ToMarkdown() const;  // a table of the candidates, the chosen one marked
};
// kInvalidArgument on fewer than 2 values or any value <= 0 or not finite.
Result<FitReport> FitBest(const std::vector<double>& sample, double alpha = 0.05);

// KS statistic of a sample against a CDF and its asymptotic p-value.
double KsStatistic(std::vector<double> sample, const Distribution& d);
double KsPValue(double d, size_t n);

// Gaps between consecutive times (n - 1 values).
std::vector<double> InterArrivals(const std::vector<double>& times);

// n values drawn from d with a generator seeded by `seed`.
std::vector<double> Generate(const Distribution& d, size_t n, uint64_t seed);

}  // namespace archi::sim
