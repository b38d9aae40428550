// The processes of one measurement: forked children, their reports, bounded waits.
//
// `ipcbus bench` forks every participant from a parent that never creates a Bus,
// a thread or a ZeroMQ context, so each child starts clean (DESIGN.md section 6:
// no fork after threads). A child runs its body, writes a child_report to a pipe
// and leaves with _exit. The parent waits for all reports up to a deadline; on a
// timeout, a failed child or SIGINT it kills (SIGKILL) and reaps every child of
// the measurement, so nothing outlives it. Not thread-safe: the parent is single-threaded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace ipcbus::bench {

// What a child measured. Times are steady-clock nanoseconds (CLOCK_MONOTONIC is
// the same clock in every process of the host).
struct child_report {
  std::vector<std::int64_t> samples_ns;  // one-way latencies (ping side)
  std::uint64_t messages = 0;            // messages counted (subscriber side)
  std::int64_t first_ns = 0;             // arrival of the first counted message
  // Arrival of the last counted message; for throughput subscribers, of the
  // end marker right after it (end_ns below).
  std::int64_t last_ns = 0;
  std::int64_t cpu_ns = 0;               // user + system time of the measured part, all threads
  std::int64_t hwm_kib = 0;              // VmHWM at the end
  std::string error;                     // non-empty: the child failed, and why
};

using child_body = std::function<child_report()>;

struct child_spec {
  std::string role;  // for messages: "ping", "pong", "sub2", ...
  int cpu = -1;      // pin to this CPU; -1: no pinning
  child_body body;
};

// Forks one child per spec (in order), runs each body there and collects the
// reports in spec order. Blocks for at most `timeout`. Returns false with
// `error` set when a child failed, died, or did not finish in time, or when
// SIGINT arrived; every child has been killed and reaped by then.
bool run_children(const std::vector<child_spec>& specs, std::chrono::milliseconds timeout,
                  std::vector<child_report>& reports, std::string& error);

// SIGINT/SIGTERM set a flag the parent checks between and during measurements.
// Children ignore both: the parent decides when they end.
void install_interrupt_handler();
bool interrupted();

std::int64_t now_ns();
std::int64_t cpu_time_ns();   // this process, user + system, all threads
std::int64_t peak_rss_kib();  // VmHWM from /proc/self/status; 0 if unreadable
std::int64_t rss_kib();       // VmRSS
// CPUs this process may run on (sched_getaffinity), in order.
std::vector<int> allowed_cpus();

// A private directory under $TMPDIR (or /tmp) for one measurement: a runtime
// dir for the bus, socket files, ZeroMQ endpoints. Removed with its contents,
// shared memory segments of its bus domain included, on destruction.
class scratch_dir {
 public:
  scratch_dir();
  ~scratch_dir();
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  // The bus domain every bus measurement in this directory uses.
  static const char* domain() { return "bench"; }

 private:
  std::filesystem::path path_;
};

// Anonymous shared memory, mapped before fork so that the parent and every
// child see the same bytes. Zero-filled.
class shared_block {
 public:
  explicit shared_block(std::size_t size);
  ~shared_block();
  shared_block(const shared_block&) = delete;
  shared_block& operator=(const shared_block&) = delete;
  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ipcbus::bench
