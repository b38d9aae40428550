// Percentiles of one round's samples and medians over rounds.
//
// A round's percentile is taken over all of its samples (nearest rank); the
// reported figure is the median of the rounds' figures, so one disturbed round
// on a noisy machine moves it little. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "bench_options.hpp"

namespace ipcbus::bench {

// The q-th quantile (0 < q <= 1) by nearest rank. `sorted` must be sorted; empty: 0.
double percentile(const std::vector<std::int64_t>& sorted, double q);

// Median of the values present; nullopt when none is.
std::optional<double> median(const std::vector<std::optional<double>>& values);

// p50 / p99 / p99.9 / max of one round's one-way samples (sorts them).
void latency_figures(std::vector<std::int64_t> samples, figures& out);

// The median of every figure over the rounds.
figures median_figures(const std::vector<figures>& rounds);

}  // namespace ipcbus::bench
