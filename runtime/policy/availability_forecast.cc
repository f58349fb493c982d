#include "runtime/policy/availability_forecast.h"

#include <algorithm>
#include <cmath>

namespace archi::policy {

ArimaFit FitArima110(const std::vector<double>& history, const ArimaOptions& o) {
  ArimaFit fit;
  const int len = static_cast<int>(history.size());
  // Differences d[1..] over the window; regress d_t on d_{t-1}.
  const int first = std::max(1, len - std::max(o.window, 2));
  std::vector<double> d;
  for (int t = first; t < len; ++t) d.push_back(history[t] - history[t - 1]);
  const int pairs = static_cast<int>(d.size()) - 1;
  if (pairs < 1) return fit;
  fit.n = static_cast<int>(d.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (int i = 1; i <= pairs; ++i) {
    const double x = d[i - 1], y = d[i];
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  double phi = 0, c = 0;
  if (o.with_intercept) {
    const double mx = sx / pairs, my = sy / pairs;
    const double vxx = sxx - pairs * mx * mx;
    phi = vxx > 1e-12 ? (sxy - pairs * mx * my) / vxx : 0.0;
    phi = std::clamp(phi, -o.max_abs_phi, o.max_abs_phi);
    c = my - phi * mx;
  } else {
    phi = sxx > 1e-12 ? sxy / sxx : 0.0;
    phi = std::clamp(phi, -o.max_abs_phi, o.max_abs_phi);
  }
  fit.phi = phi;
  fit.c = c;
  return fit;
}

std::vector<double> ForecastArima110(const std::vector<double>& history, int horizon,
                                     const ArimaOptions& o) {
  std::vector<double> out;
  if (history.empty() || horizon <= 0) return out;
  const ArimaFit fit = FitArima110(history, o);
  const int len = static_cast<int>(history.size());
  double hi = o.max_level;
  if (hi < 0) {
    hi = history.back();
    for (int t = std::max(0, len - o.window - 1); t < len; ++t) hi = std::max(hi, history[t]);
  }
  double level = history.back();
  double d = len >= 2 ? history[len - 1] - history[len - 2] : 0.0;
  double damp = 1;
  out.reserve(horizon);
  for (int k = 1; k <= horizon; ++k) {
    d = fit.c + fit.phi * d;
    damp *= o.damping;
    level += damp * d;
    level = std::clamp(level, o.min_level, std::max(o.min_level, hi));
    out.push_back(level);
  }
  return out;
}

std::vector<double> ForecastNaive(const std::vector<double>& history, int horizon) {
  if (history.empty() || horizon <= 0) return {};
  return std::vector<double>(horizon, history.back());
}

Forecast AvailabilityForecast(const std::vector<double>& values, TimeMs now_ms, TimeMs step_ms) {
  Forecast f;
  for (size_t k = 0; k < values.size(); ++k) {
    f.available_workers.push_back(
        ForecastPoint{now_ms + static_cast<TimeMs>(k + 1) * step_ms, values[k]});
  }
  return f;
}

std::vector<double> PerMinuteCounts(const std::vector<std::pair<TimeMs, double>>& rows) {
  std::vector<double> out;
  if (rows.empty()) return out;
  constexpr TimeMs kMinute = 60'000;
  const TimeMs first = rows.front().first / kMinute;
  const TimeMs last = rows.back().first / kMinute;
  size_t i = 0;
  double count = rows.front().second;
  for (TimeMs m = first; m <= last; ++m) {
    while (i < rows.size() && rows[i].first <= m * kMinute) count = rows[i++].second;
    out.push_back(count);
  }
  return out;
}

ForecastErrors EvaluateForecaster(const std::vector<double>& series, ForecasterKind kind,
                                  const ArimaOptions& o, int horizon, int warmup) {
  ForecastErrors e;
  e.name = kind == ForecasterKind::kNaive ? "naive" : "arima110";
  e.mae_by_horizon.assign(horizon, 0.0);
  e.rmse_by_horizon.assign(horizon, 0.0);
  const int len = static_cast<int>(series.size());
  std::vector<double> hist;
  double total_sq = 0;
  for (int t = std::max(warmup, 0); t + horizon < len; ++t) {
    hist.assign(series.begin(), series.begin() + t + 1);
    const std::vector<double> f = kind == ForecasterKind::kNaive
                                      ? ForecastNaive(hist, horizon)
                                      : ForecastArima110(hist, horizon, o);
    for (int h = 1; h <= horizon; ++h) {
      const double err = f[h - 1] - series[t + h];
      e.mae_by_horizon[h - 1] += std::abs(err);
      e.rmse_by_horizon[h - 1] += err * err;
      total_sq += err * err;
    }
    ++e.origins;
  }
  if (e.origins == 0) return e;
  for (int h = 0; h < horizon; ++h) {
    e.mae_by_horizon[h] /= e.origins;
    e.rmse_by_horizon[h] = std::sqrt(e.rmse_by_horizon[h] / e.origins);
    e.mae += e.mae_by_horizon[h] / horizon;
  }
  e.rmse = std::sqrt(total_sq / (static_cast<double>(e.origins) * horizon));
  return e;
}

}  // namespace archi::policy
