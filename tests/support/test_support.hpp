// Shared helpers for the test suites: a private bus domain and runtime directory
// per test, child processes, and checksums.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "ipcbus/bus.hpp"
#include "test_messages.pb.h"

namespace ipcbus::test {

// A runtime directory of its own (short, so unix socket paths fit) and a
// domain named after the test. Removed, with everything in it, on destruction.
class scratch_domain {
 public:
  explicit scratch_domain(std::string name = "");
  ~scratch_domain();
  scratch_domain(const scratch_domain&) = delete;
  scratch_domain& operator=(const scratch_domain&) = delete;

  // A config for this domain: the given YAML (may be empty) plus domain and runtime_dir.
  config make_config(const std::string& yaml = "") const;
  bus_options options(const std::string& yaml = "") const;
  // Writes YAML (with domain/runtime_dir) to a file and returns its path, for child processes.
  std::filesystem::path write_config(const std::string& yaml = "") const;
  const std::filesystem::path& runtime_dir() const { return runtime_dir_; }
  const std::string& domain() const { return domain_; }
  std::filesystem::path domain_dir() const { return runtime_dir_ / domain_; }

 private:
  std::filesystem::path runtime_dir_;
  std::string domain_;
};

std::uint32_t checksum(std::string_view bytes);
ipcbus::test::Sample make_sample(std::uint64_t index, std::size_t body_size);
bool sample_intact(const ipcbus::test::Sample& s);
// sample_intact, and every body byte is the one make_sample puts there for this
// index: a body of one message under the header of another is caught as well.
bool sample_matches_index(const ipcbus::test::Sample& s);

// Counters a test peer keeps in a small shared file while it runs (`--status`
// modes of test_peer). They are updated in place, so a test reads everything a
// peer counted even after the peer was SIGKILLed.
struct peer_status {
  enum phase_value : std::uint32_t { idle = 0, publishing_small = 1, publishing_large = 2 };
  std::atomic<std::uint32_t> phase;           // publisher: what it is doing right now
  std::atomic<std::uint32_t> pid;
  std::atomic<std::uint64_t> published;       // publisher: messages published (publish and publish_batch)
  std::atomic<std::uint64_t> publish_errors;  // publisher: publish calls that failed (e.g. timed_out)
  std::atomic<std::uint64_t> received;        // subscriber: messages delivered to it
  std::atomic<std::uint64_t> large_received;  // subscriber: of those, bodies of 64 KiB or more
  std::atomic<std::uint64_t> corrupt;         // subscriber: failed sample_matches_index
  std::atomic<std::uint64_t> out_of_order;    // subscriber: index not above the last one of that publisher
  std::atomic<std::uint64_t> lost;            // subscriber: sum of MessageInfo::lost_before
  std::atomic<std::uint64_t> bad_frames;      // subscriber: its bus's bad_frames counter
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// A peer_status mapped from a file (created zero-filled if missing). Throws on failure.
class status_page {
 public:
  explicit status_page(const std::filesystem::path& file);
  ~status_page();
  status_page(const status_page&) = delete;
  status_page& operator=(const status_page&) = delete;
  peer_status* operator->() const { return status_; }

 private:
  peer_status* status_ = nullptr;
};

// A child process started with fork/exec. The destructor kills (SIGKILL) and reaps it.
class child_process {
 public:
  child_process(const std::string& program, const std::vector<std::string>& args,
                const std::vector<std::string>& env = {});
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  pid_t pid() const { return pid_; }
  void signal(int sig) const;
  // SIGSTOP, then waits until every thread of the child has stopped (kill only
  // queues the signal: a thread on another core runs on for a moment). False if
  // the child ended instead or did not stop within `timeout`.
  bool freeze(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits up to `timeout`; returns the exit status as from waitpid (or -1 on timeout).
  int wait(std::chrono::milliseconds timeout);
  bool running();
  // Everything the child wrote to stdout (read after it ended).
  std::string output() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::filesystem::path output_file_;
};

// Path of a program built by this project (bin dir of the build tree).
std::string built_program(const std::string& name);

// Waits until pred() is true, polling; false on timeout.
bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace ipcbus::test
