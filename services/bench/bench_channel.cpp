#include "bench_channel.hpp"

#include <string>

namespace ipcbus::bench {

child_report run_channel_ping(pair_channel& c, const pingpong_plan& plan) {
  auto ends = c.open(0);
  std::string buf(plan.size, 'D');
  child_report r;
  r.samples_ns.reserve(static_cast<std::size_t>(plan.count));
  const auto cpu0 = cpu_time_ns();
  for (int i = 0; i < plan.warmup + plan.count; ++i) {
    const auto t0 = now_ns();
    ends.tx->send(buf.data(), buf.size());
    ends.rx->receive(buf.data(), buf.size());
    if (i >= plan.warmup) r.samples_ns.push_back((now_ns() - t0) / 2);
  }
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.messages = static_cast<std::uint64_t>(plan.warmup + plan.count);
  r.hwm_kib = peak_rss_kib();
  return r;
}

child_report run_channel_pong(pair_channel& c, const pingpong_plan& plan) {
  auto ends = c.open(1);
  std::string buf(plan.size, 'D');
  child_report r;
  const auto cpu0 = cpu_time_ns();
  for (int i = 0; i < plan.warmup + plan.count; ++i) {
    ends.rx->receive(buf.data(), buf.size());
    ends.tx->send(buf.data(), buf.size());
  }
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.messages = static_cast<std::uint64_t>(plan.warmup + plan.count);
  r.hwm_kib = peak_rss_kib();
  return r;
}

child_report run_channel_publisher(fanout_channel& c, const throughput_plan& plan) {
  auto tx = c.open_publisher();
  std::string buf(plan.size, 'D');
  child_report r;
  const auto cpu0 = cpu_time_ns();
  const auto end = now_ns() + std::chrono::nanoseconds(plan.duration).count();
  std::uint64_t sent = 0;
  do {
    for (int i = 0; i < 64; ++i) tx->send(buf.data(), buf.size());
    sent += 64;
  } while (now_ns() < end);
  buf[0] = 'E';
  tx->send(buf.data(), buf.size());
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.messages = sent;
  r.hwm_kib = peak_rss_kib();
  return r;
}

child_report run_channel_subscriber(fanout_channel& c, int index, const throughput_plan& plan) {
  auto rx = c.open_subscriber(index);
  std::string buf(plan.size, 'D');
  child_report r;
  const auto cpu0 = cpu_time_ns();
  // The clock is read at the first message and at the end marker only: a read
  // per message (25-80 ns here) would cap the fastest candidates.
  for (;;) {
    rx->receive(buf.data(), buf.size());
    if (buf[0] == 'E') break;
    if (r.messages++ == 0) r.first_ns = now_ns();
  }
  r.last_ns = now_ns();
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.hwm_kib = peak_rss_kib();
  return r;
}

}  // namespace ipcbus::bench
