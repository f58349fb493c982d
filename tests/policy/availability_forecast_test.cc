// ARIMA(1,1,0) and naive availability forecasts, the per-minute resampling of traces and the
// rolling-origin error, on series whose answers follow by hand.
#include "runtime/policy/availability_forecast.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace archi::policy {
namespace {

TEST(ArimaFit, RecoversPhiWithoutIntercept) {
  // Differences 8, 4, 2, 1, 0.5: each half the one before -> phi = 0.5 exactly.
  const std::vector<double> x = {0, 8, 12, 14, 15, 15.5};
  ArimaOptions o;
  o.max_level = 1e9;
  const ArimaFit fit = FitArima110(x, o);
  EXPECT_NEAR(fit.phi, 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(fit.c, 0);
  EXPECT_EQ(fit.n, 5);
  // Next differences 0.25, 0.125: levels 15.75, 15.875.
  const std::vector<double> f = ForecastArima110(x, 2, o);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_NEAR(f[0], 15.75, 1e-12);
  EXPECT_NEAR(f[1], 15.875, 1e-12);
}

TEST(ArimaFit, RecoversInterceptAndPhi) {
  // d_t = 1 + 0.5 d_{t-1} from d = 0: 1, 1.5, 1.75, 1.875, 1.9375.
  std::vector<double> x = {10};
  double d = 0;
  for (int i = 0; i < 5; ++i) {
    d = 1 + 0.5 * d;
    x.push_back(x.back() + d);
  }
  ArimaOptions o;
  o.with_intercept = true;
  const ArimaFit fit = FitArima110(x, o);
  EXPECT_NEAR(fit.phi, 0.5, 1e-9);
  EXPECT_NEAR(fit.c, 1.0, 1e-9);
}

TEST(ArimaForecast, ClampsAndDamps) {
  // Falling by 5 a minute with phi = 1 -> clamped at 0.95: 20, 15, 10 -> next changes -4.75,
  // -4.5125, ... ; from 10: 5.25, 0.7375, then below 0 -> clamped to 0.
  const std::vector<double> x = {20, 15, 10};
  ArimaOptions o;
  EXPECT_NEAR(FitArima110(x, o).phi, 0.95, 1e-12);
  std::vector<double> f = ForecastArima110(x, 4, o);
  EXPECT_NEAR(f[0], 5.25, 1e-12);
  EXPECT_NEAR(f[1], 0.7375, 1e-12);
  EXPECT_DOUBLE_EQ(f[2], 0);
  EXPECT_DOUBLE_EQ(f[3], 0);
  // Rising: clamped at the window's maximum (the last value here) by default.
  f = ForecastArima110({10, 15, 20}, 2, o);
  EXPECT_DOUBLE_EQ(f[0], 20);
  // Damping 0.5 on the falling series: changes -4.75 x 0.5, then -4.5125 x 0.25.
  o.damping = 0.5;
  f = ForecastArima110(x, 2, o);
  EXPECT_NEAR(f[0], 10 - 2.375, 1e-12);
  EXPECT_NEAR(f[1], 10 - 2.375 - 1.128125, 1e-12);
}

TEST(ArimaForecast, FlatAndShortHistories) {
  EXPECT_TRUE(ForecastArima110({}, 3, {}).empty());
  EXPECT_EQ(ForecastArima110({7}, 2, {}), (std::vector<double>{7, 7}));
  EXPECT_EQ(ForecastArima110({7, 7, 7}, 2, {}), (std::vector<double>{7, 7}));
  EXPECT_EQ(ForecastNaive({3, 4}, 3), (std::vector<double>{4, 4, 4}));
}

TEST(PerMinuteCounts, LastRowAtATimeWinsAndStepsHold) {
  const std::vector<std::pair<TimeMs, double>> rows = {
      {0, 18}, {0, 19}, {60'000, 20}, {180'000, 16}, {180'000, 15}};
  EXPECT_EQ(PerMinuteCounts(rows), (std::vector<double>{19, 20, 20, 15}));
  // A trace starting later starts at its first minute.
  EXPECT_EQ(PerMinuteCounts({{120'000, 3}, {240'000, 5}}), (std::vector<double>{3, 3, 5}));
}

TEST(EvaluateForecaster, RampByHand) {
  // x_t = t. Naive at horizon h is off by h: MAE 1 and 2 for H = 2, mean 1.5; RMSE over all
  // errors sqrt((1 + 4) / 2). ARIMA with intercept sees constant differences (phi = 0, c = 1)
  // and, unclamped, is exact.
  std::vector<double> x;
  for (int t = 0; t < 20; ++t) x.push_back(t);
  ArimaOptions o;
  const ForecastErrors naive = EvaluateForecaster(x, ForecasterKind::kNaive, o, 2, 5);
  EXPECT_EQ(naive.origins, 20 - 2 - 5);
  EXPECT_DOUBLE_EQ(naive.mae_by_horizon[0], 1);
  EXPECT_DOUBLE_EQ(naive.mae_by_horizon[1], 2);
  EXPECT_DOUBLE_EQ(naive.mae, 1.5);
  EXPECT_NEAR(naive.rmse, std::sqrt(2.5), 1e-12);
  o.with_intercept = true;
  o.max_level = 1e9;
  const ForecastErrors arima = EvaluateForecaster(x, ForecasterKind::kArima110, o, 2, 5);
  EXPECT_NEAR(arima.mae, 0, 1e-9);
}

TEST(AvailabilityForecast, PointsOneStepApart) {
  const Forecast f = AvailabilityForecast({5, 4}, 1000, 60'000);
  ASSERT_EQ(f.available_workers.size(), 2u);
  EXPECT_EQ(f.available_workers[0], (ForecastPoint{61'000, 5}));
  EXPECT_EQ(f.available_workers[1], (ForecastPoint{121'000, 4}));
}

}  // namespace
}  // namespace archi::policy
