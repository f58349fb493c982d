#include "bench/sim/fit.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_sf_psi.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace archi::sim {

namespace {

// GSL's default error handler aborts the process; ours report through return values instead.
void GslQuiet() {
  static const bool once = [] {
    gsl_set_error_handler_off();
    return true;
  }();
  (void)once;
}

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

Status CheckSample(const std::vector<double>& x) {
  if (x.size() < 2) return InvalidArgumentError("fit: need at least 2 values, got " + std::to_string(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || x[i] <= 0) {
      return InvalidArgumentError("fit: value " + std::to_string(i) + " is " + Num(x[i]) +
                                  " (every value must be positive and finite)");
    }
  }
  return Status::Ok();
}

double LogLikelihood(const std::vector<double>& x, const Distribution& d) {
  double ll = 0;
  switch (d.kind) {
    case DistKind::kExponential:
      for (double v : x) ll += std::log(d.a) - d.a * v;
      break;
    case DistKind::kGamma: {
      const double c = -std::lgamma(d.a) - d.a * std::log(d.b);
      for (double v : x) ll += c + (d.a - 1) * std::log(v) - v / d.b;
      break;
    }
    case DistKind::kLognormal: {
      const double c = -std::log(d.b) - 0.5 * std::log(2 * M_PI);
      for (double v : x) {
        double z = (std::log(v) - d.a) / d.b;
        ll += c - std::log(v) - 0.5 * z * z;
      }
      break;
    }
    case DistKind::kConstant:
      ll = 0;
      break;
  }
  return ll;
}

FitResult Finish(const std::vector<double>& x, Distribution d) {
  FitResult r;
  r.dist = d;
  r.log_likelihood = LogLikelihood(x, d);
  r.ks_d = KsStatistic(x, d);
  r.ks_p = KsPValue(r.ks_d, x.size());
  return r;
}

}  // namespace

std::string_view DistKindName(DistKind k) {
  switch (k) {
    case DistKind::kExponential: return "exponential";
    case DistKind::kGamma: return "gamma";
    case DistKind::kLognormal: return "lognormal";
    case DistKind::kConstant: return "constant";
  }
  return "?";
}

Distribution Distribution::GammaMeanCv(double mean, double cv) {
  if (cv <= 0) return Constant(mean);
  double shape = 1.0 / (cv * cv);
  return Gamma(shape, mean / shape);
}

double Distribution::Mean() const {
  switch (kind) {
    case DistKind::kExponential: return 1.0 / a;
    case DistKind::kGamma: return a * b;
    case DistKind::kLognormal: return std::exp(a + 0.5 * b * b);
    case DistKind::kConstant: return a;
  }
  return 0;
}

double Distribution::Cdf(double x) const {
  GslQuiet();
  if (x <= 0) return kind == DistKind::kConstant && a <= x ? 1.0 : 0.0;
  switch (kind) {
    case DistKind::kExponential: return gsl_cdf_exponential_P(x, 1.0 / a);
    case DistKind::kGamma: return gsl_cdf_gamma_P(x, a, b);
    case DistKind::kLognormal: return gsl_cdf_lognormal_P(x, a, b);
    case DistKind::kConstant: return x >= a ? 1.0 : 0.0;
  }
  return 0;
}

int Distribution::Parameters() const {
  return kind == DistKind::kExponential || kind == DistKind::kConstant ? 1 : 2;
}

std::string Distribution::ToString() const {
  switch (kind) {
    case DistKind::kExponential: return "exponential(rate=" + Num(a) + ")";
    case DistKind::kGamma: return "gamma(shape=" + Num(a) + ", scale=" + Num(b) + ")";
    case DistKind::kLognormal: return "lognormal(mu=" + Num(a) + ", sigma=" + Num(b) + ")";
    case DistKind::kConstant: return "constant(" + Num(a) + ")";
  }
  return "?";
}

Result<Distribution> Distribution::Parse(const std::string& spec) {
  auto colon = spec.find(':');
  if (colon == std::string::npos) {
    return InvalidArgumentError("distribution '" + spec +
                                "': expected exp:RATE, gamma:SHAPE,SCALE, lognormal:MU,SIGMA or const:V");
  }
  std::string kind = spec.substr(0, colon);
  std::vector<double> v;
  std::string rest = spec.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    size_t comma = rest.find(',', start);
    std::string f = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    double x = 0;
    auto [p, ec] = std::from_chars(f.data(), f.data() + f.size(), x);
    if (f.empty() || ec != std::errc() || p != f.data() + f.size() || !std::isfinite(x)) {
      return InvalidArgumentError("distribution '" + spec + "': '" + f + "' is not a number");
    }
    v.push_back(x);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  auto need = [&](size_t n) -> Status {
    if (v.size() != n) return InvalidArgumentError("distribution '" + spec + "': expected " + std::to_string(n) + " parameter(s)");
    for (double x : v) {
      if (kind != "lognormal" && x <= 0) return InvalidArgumentError("distribution '" + spec + "': parameters must be positive");
    }
    return Status::Ok();
  };
  if (kind == "exp" || kind == "exponential") {
    ARCHI_RETURN_IF_ERROR(need(1));
    return Exponential(v[0]);
  }
  if (kind == "gamma") {
    ARCHI_RETURN_IF_ERROR(need(2));
    return Gamma(v[0], v[1]);
  }
  if (kind == "lognormal") {
    ARCHI_RETURN_IF_ERROR(need(2));
    if (v[1] <= 0) return InvalidArgumentError("distribution '" + spec + "': sigma must be positive");
    return Lognormal(v[0], v[1]);
  }
  if (kind == "const" || kind == "constant") {
    ARCHI_RETURN_IF_ERROR(need(1));
    return Constant(v[0]);
  }
  return InvalidArgumentError("distribution '" + spec + "': unknown kind '" + kind + "'");
}

Sampler::Sampler(const Distribution& d)
    : d_(d),
      exp_(d.kind == DistKind::kExponential ? d.a : 1.0),
      gamma_(d.kind == DistKind::kGamma ? d.a : 1.0, d.kind == DistKind::kGamma ? d.b : 1.0),
      lognormal_(d.kind == DistKind::kLognormal ? d.a : 0.0,
                 d.kind == DistKind::kLognormal ? d.b : 1.0) {}

double Sampler::operator()(std::mt19937_64& rng) {
  switch (d_.kind) {
    case DistKind::kExponential: return exp_(rng);
    case DistKind::kGamma: return gamma_(rng);
    case DistKind::kLognormal: return lognormal_(rng);
    case DistKind::kConstant: return d_.a;
  }
  return 0;
}

Result<FitResult> FitExponential(const std::vector<double>& x) {
  ARCHI_RETURN_IF_ERROR(CheckSample(x));
  double mean = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
  return Finish(x, Distribution::Exponential(1.0 / mean));
}

Result<FitResult> FitGamma(const std::vector<double>& x) {
  ARCHI_RETURN_IF_ERROR(CheckSample(x));
  GslQuiet();
  const double n = static_cast<double>(x.size());
  double mean = 0, mean_log = 0;
  for (double v : x) mean += v, mean_log += std::log(v);
  mean /= n;
  mean_log /= n;
  const double s = std::log(mean) - mean_log;  // >= 0 by Jensen; 0 only for a constant sample
  if (!(s > 1e-12)) return InvalidArgumentError("fit gamma: all values are equal");
  // Choi-Wette start, then Newton on f(k) = log k - psi(k) - s (f is decreasing and convex).
  double k = (3 - s + std::sqrt((s - 3) * (s - 3) + 24 * s)) / (12 * s);
  for (int i = 0; i < 100; ++i) {
    gsl_sf_result psi, psi1;
    if (gsl_sf_psi_e(k, &psi) != GSL_SUCCESS || gsl_sf_psi_1_e(k, &psi1) != GSL_SUCCESS) {
      return InternalError("fit gamma: digamma/trigamma failed at shape " + Num(k));
    }
    double f = std::log(k) - psi.val - s;
    double df = 1.0 / k - psi1.val;
    double next = k - f / df;
    if (next <= 0) next = k / 2;
    if (std::fabs(next - k) <= 1e-12 * k) {
      k = next;
      break;
    }
    k = next;
  }
  return Finish(x, Distribution::Gamma(k, mean / k));
}

Result<FitResult> FitLognormal(const std::vector<double>& x) {
  ARCHI_RETURN_IF_ERROR(CheckSample(x));
  const double n = static_cast<double>(x.size());
  double mu = 0;
  for (double v : x) mu += std::log(v);
  mu /= n;
  double var = 0;
  for (double v : x) var += (std::log(v) - mu) * (std::log(v) - mu);
  var /= n;
  if (!(var > 0)) return InvalidArgumentError("fit lognormal: all values are equal");
  return Finish(x, Distribution::Lognormal(mu, std::sqrt(var)));
}

Result<FitReport> FitBest(const std::vector<double>& sample, double alpha) {
  ARCHI_RETURN_IF_ERROR(CheckSample(sample));
  FitReport rep;
  rep.n = sample.size();
  rep.alpha = alpha;
  ARCHI_ASSIGN_OR_RETURN(FitResult e, FitExponential(sample));
  ARCHI_ASSIGN_OR_RETURN(FitResult g, FitGamma(sample));
  ARCHI_ASSIGN_OR_RETURN(FitResult l, FitLognormal(sample));
  rep.candidates = {e, g, l};
  // Passing fits: fewest parameters, then smallest D. None passing: smallest D.
  bool any_pass = std::any_of(rep.candidates.begin(), rep.candidates.end(),
                              [&](const FitResult& r) { return r.ks_p >= alpha; });
  size_t best = rep.candidates.size();
  for (size_t i = 0; i < rep.candidates.size(); ++i) {
    const FitResult& r = rep.candidates[i];
    if (any_pass && r.ks_p < alpha) continue;
    if (best == rep.candidates.size()) {
      best = i;
      continue;
    }
    const FitResult& b = rep.candidates[best];
    int rp = any_pass ? r.dist.Parameters() : 0, bp = any_pass ? b.dist.Parameters() : 0;
    if (rp < bp || (rp == bp && r.ks_d < b.ks_d)) best = i;
  }
  rep.best_index = best;
  return rep;
}

std::string FitReport::ToMarkdown() const {
  std::string s = "| distribution | parameters | mean | log-likelihood | KS D | KS p | chosen |\n"
                  "|---|---|---:|---:|---:|---:|---|\n";
  for (size_t i = 0; i < candidates.size(); ++i) {
    const FitResult& r = candidates[i];
    s += "| " + std::string(DistKindName(r.dist.kind)) + " | " + r.dist.ToString() + " | " +
         Num(r.dist.Mean()) + " | " + Num(r.log_likelihood) + " | " + Num(r.ks_d) + " | " +
         Num(r.ks_p) + " | " + (i == best_index ? "yes" : "") + " |\n";
  }
  s += "\nn = " + std::to_string(n) + "; chosen: fewest parameters among fits with KS p >= " +
       Num(alpha) + ", then smallest D (smallest D when none passes).\n";
  return s;
}

double KsStatistic(std::vector<double> x, const Distribution& d) {
  std::sort(x.begin(), x.end());
  const double n = static_cast<double>(x.size());
  double dmax = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double f = d.Cdf(x[i]);
    dmax = std::max({dmax, static_cast<double>(i + 1) / n - f, f - static_cast<double>(i) / n});
  }
  return dmax;
}

double KsPValue(double d, size_t n) {
  // Kolmogorov's limit with Stephens' small-sample correction:
  // Q(l) = 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 l^2), l = (sqrt n + 0.12 + 0.11 / sqrt n) d.
  const double sn = std::sqrt(static_cast<double>(n));
  const double l = (sn + 0.12 + 0.11 / sn) * d;
  if (l < 0.2) return 1.0;
  double q = 0, sign = 1;
  for (int j = 1; j <= 100; ++j) {
    double term = std::exp(-2.0 * j * j * l * l);
    q += sign * term;
    sign = -sign;
    if (term < 1e-16) break;
  }
  return std::clamp(2 * q, 0.0, 1.0);
}

std::vector<double> InterArrivals(const std::vector<double>& times) {
  std::vector<double> gaps;
  for (size_t i = 1; i < times.size(); ++i) gaps.push_back(times[i] - times[i - 1]);
  return gaps;
}

std::vector<double> Generate(const Distribution& d, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Sampler s(d);
  std::vector<double> out(n);
  for (double& v : out) v = s(rng);
  return out;
}

}  // namespace archi::sim
