#include "bench_stats.hpp"

#include <algorithm>
#include <cmath>

namespace ipcbus::bench {

double percentile(const std::vector<std::int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1]);
}

std::optional<double> median(const std::vector<std::optional<double>>& values) {
  std::vector<double> v;
  for (const auto& x : values)
    if (x) v.push_back(*x);
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const std::size_t mid = v.size() / 2;
  return v.size() % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

void latency_figures(std::vector<std::int64_t> samples, figures& out) {
  if (samples.empty()) return;
  std::sort(samples.begin(), samples.end());
  out.p50_ns = percentile(samples, 0.50);
  out.p99_ns = percentile(samples, 0.99);
  out.p999_ns = percentile(samples, 0.999);
  out.max_ns = static_cast<double>(samples.back());
}

figures median_figures(const std::vector<figures>& rounds) {
  auto over = [&](std::optional<double> figures::*field) {
    std::vector<std::optional<double>> v;
    for (const auto& r : rounds) v.push_back(r.*field);
    return median(v);
  };
  figures m;
  for (auto field : {&figures::p50_ns, &figures::p99_ns, &figures::p999_ns, &figures::max_ns, &figures::msgs_per_s,
                     &figures::bytes_per_s, &figures::cpu_ns_per_msg, &figures::rss_kib})
    m.*field = over(field);
  return m;
}

}  // namespace ipcbus::bench
