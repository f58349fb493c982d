// Availability forecasting on per-minute instance counts (Parcae's predictor), and a
// rolling-origin evaluation to choose a forecaster by its error on a trace.
//
//   ARIMA(1,1,0): on the differences d_t = x_t - x_{t-1}, d_t = c + phi * d_{t-1} + e_t, fitted
//   by ordinary least squares over the last `window` differences (c = 0 unless with_intercept).
//   The forecast iterates the recursion, damps the k-th step's change by damping^k and clamps
//   the level to [min_level, max_level] (defaults: 0 and the largest count in the window), as
//   Parcae's predictor is clamped and damped.
//   Naive: x_{t+h} = x_t (the last value).
//
// Pure functions of their arguments; thread-safe. Reading traces is the caller's business
// (bench/policy/ reads the shared p3 and g4dn traces).
#pragma once

#include <string>
#include <vector>

#include "runtime/policy/policy.h"

namespace archi::policy {

struct ArimaOptions {
  int window = 30;              // differences used for the fit
  bool with_intercept = false;  // fit c as well (a drift); off: c = 0
  double max_abs_phi = 0.95;    // |phi| clamp, keeps the recursion stable
  double damping = 1.0;         // multiplies the k-th step's change by damping^k (1 = none)
  double min_level = 0;
  double max_level = -1;  // < 0: the largest value in the fitted window
  friend bool operator==(const ArimaOptions&, const ArimaOptions&) = default;
};

struct ArimaFit {
  double phi = 0;
  double c = 0;
  int n = 0;  // differences used
  friend bool operator==(const ArimaFit&, const ArimaFit&) = default;
};

// Fit on the last window+1 values of `history` (fewer if shorter; n = 0 with phi = c = 0 when
// there are fewer than 2 differences).
ArimaFit FitArima110(const std::vector<double>& history, const ArimaOptions& o);
// Values for steps 1..horizon after the last element of `history` (empty history: empty).
std::vector<double> ForecastArima110(const std::vector<double>& history, int horizon,
                                     const ArimaOptions& o);
std::vector<double> ForecastNaive(const std::vector<double>& history, int horizon);

// Per-minute series as a policy Forecast: point k (1..horizon) at now_ms + k * step_ms.
Forecast AvailabilityForecast(const std::vector<double>& values, TimeMs now_ms, TimeMs step_ms);

// Running count per minute from (time_ms, count-after-event) rows sorted by time: entry m is the
// count in effect at m * 60 s (the last row at or before it), from the minute of the first row
// to the minute of the last. Rows sharing a time: the last one wins.
std::vector<double> PerMinuteCounts(const std::vector<std::pair<TimeMs, double>>& rows);

enum class ForecasterKind { kNaive, kArima110 };

struct ForecastErrors {
  std::string name;
  std::vector<double> mae_by_horizon;  // index h-1
  std::vector<double> rmse_by_horizon;
  double mae = 0;   // mean over horizons 1..H
  double rmse = 0;  // sqrt of the mean squared error over all (origin, horizon)
  int origins = 0;
};

// Rolling origin: for every t with t >= warmup and t + horizon < series.size(), forecast from
// series[0..t] and compare with series[t+1..t+horizon].
ForecastErrors EvaluateForecaster(const std::vector<double>& series, ForecasterKind kind,
                                  const ArimaOptions& o, int horizon, int warmup);

}  // namespace archi::policy
