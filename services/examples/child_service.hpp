// child_service: one demo microservice that ipcbus-demo runs as a child process.
//
// The launcher is single-threaded and keeps SIGCHLD, SIGINT and SIGTERM blocked
// (block_launcher_signals()); it takes them with sigtimedwait() when it is ready
// to, so a child's exit or a Ctrl-C never interrupts it halfway through a step.
// Children get the original signal mask back before exec.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace ipcbus::examples {

// Blocks SIGCHLD, SIGINT and SIGTERM in the calling (only) thread and remembers
// the previous mask for the children. Call once, before starting any child.
void block_launcher_signals();

// Waits up to `timeout` for SIGCHLD, SIGINT or SIGTERM; returns the signal, or 0 on timeout.
int wait_for_signal(std::chrono::milliseconds timeout);

class child_service {
 public:
  // fork + exec of `program` with `args` and the environment plus `env`. The child
  // gets its own process group (so a terminal's Ctrl-C reaches only the launcher,
  // which then stops the services in order), stdin from /dev/null, SIGTERM if the
  // launcher dies, and in IPCBUS_DEMO_READY_FD a pipe to say it is ready.
  // Throws std::system_error.
  child_service(std::string label, const std::string& program, const std::vector<std::string>& args,
                const std::vector<std::pair<std::string, std::string>>& env);
  // A child still running here is killed (SIGKILL) and reaped.
  ~child_service();
  child_service(const child_service&) = delete;
  child_service& operator=(const child_service&) = delete;

  const std::string& label() const { return label_; }
  pid_t pid() const { return pid_; }

  // Waits until the child reports ready. False, with the reason in `why`, when it
  // exits first or does not report within `timeout`.
  bool wait_ready(std::chrono::milliseconds timeout, std::string& why);

  // Reaps the child if it has exited (never blocks); true once it has.
  bool poll();
  // SIGTERM, unless it has already exited.
  void terminate();
  // Waits up to `timeout` for the child to exit; true once it has.
  bool wait_exit(std::chrono::milliseconds timeout);
  // SIGKILL and reap.
  void kill();

  bool exited() const { return reaped_; }
  // Exited by itself with status 0.
  bool succeeded() const;
  // "exited with status 0", "killed by signal 9 (Killed)", "running".
  std::string describe() const;

 private:
  std::string label_;
  pid_t pid_ = -1;
  int ready_fd_ = -1;  // read end of the readiness pipe
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace ipcbus::examples
