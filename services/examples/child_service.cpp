#include "child_service.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "service_support.hpp"

extern char** environ;

namespace ipcbus::examples {
namespace {

sigset_t original_mask;  // what the children get back before exec

sigset_t launcher_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// The fd the child finds its readiness pipe on (after stdin, stdout, stderr).
constexpr int child_ready_fd = 3;

}  // namespace

void block_launcher_signals() {
  const sigset_t set = launcher_signals();
  ::sigprocmask(SIG_BLOCK, &set, &original_mask);
}

int wait_for_signal(std::chrono::milliseconds timeout) {
  const sigset_t set = launcher_signals();
  timespec ts{static_cast<time_t>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000) * 1000000};
  for (;;) {
    const int sig = ::sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) throw_errno("sigtimedwait");
  }
}

child_service::child_service(std::string label, const std::string& program,
                             const std::vector<std::string>& args,
                             const std::vector<std::pair<std::string, std::string>>& env)
    : label_(std::move(label)) {
  // Everything the child needs is built before fork: between fork and exec only
  // async-signal-safe calls are allowed, and allocation is not one of them.
  std::vector<std::string> strings{program};
  strings.insert(strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  std::vector<std::pair<std::string, std::string>> all_env = env;
  all_env.emplace_back(ready_fd_variable, std::to_string(child_ready_fd));
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const bool overridden = std::any_of(all_env.begin(), all_env.end(), [&](const auto& kv) {
      return entry.size() > kv.first.size() && entry.starts_with(kv.first) && entry[kv.first.size()] == '=';
    });
    if (!overridden) env_strings.emplace_back(entry);
  }
  for (const auto& [key, value] : all_env) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) throw_errno("pipe2");
  const pid_t parent = ::getpid();
  ::fflush(nullptr);  // nothing buffered may be written twice
  pid_ = ::fork();
  if (pid_ < 0) {
    const int error = errno;
    ::close(ready[0]);
    ::close(ready[1]);
    throw std::system_error(error, std::generic_category(), "fork");
  }
  if (pid_ == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the launcher died before prctl
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    if (ready[1] == child_ready_fd) {
      ::fcntl(child_ready_fd, F_SETFD, 0);  // dup2 onto itself would keep O_CLOEXEC
    } else {
      ::dup2(ready[1], child_ready_fd);     // the copy has no O_CLOEXEC
    }
    ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    const char message[] = "ipcbus-demo: exec failed\n";
    (void)!::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(127);
  }
  ::close(ready[1]);  // the child holds the only write end: EOF means it exited
  ready_fd_ = ready[0];
}

child_service::~child_service() {
  if (!reaped_ && pid_ > 0) kill();
  if (ready_fd_ >= 0) ::close(ready_fd_);
}

bool child_service::wait_ready(std::chrono::milliseconds timeout, std::string& why) {
  pollfd p{ready_fd_, POLLIN, 0};
  int n;
  while ((n = ::poll(&p, 1, static_cast<int>(timeout.count()))) < 0 && errno == EINTR) {
  }
  if (n == 0) {
    why = "not ready after " + std::to_string(timeout.count() / 1000) + " s";
    return false;
  }
  char byte;
  ssize_t got;
  while ((got = ::read(ready_fd_, &byte, 1)) < 0 && errno == EINTR) {
  }
  if (got == 1) return true;
  // EOF: it closed the pipe without a word, which only exiting does.
  wait_exit(std::chrono::seconds(2));
  why = "ended before it was ready (" + describe() + ")";
  return false;
}

bool child_service::poll() {
  if (reaped_) return true;
  const pid_t r = ::waitpid(pid_, &status_, WNOHANG);
  if (r == pid_) reaped_ = true;
  return reaped_;
}

void child_service::terminate() {
  if (!poll()) ::kill(pid_, SIGTERM);
}

bool child_service::wait_exit(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!poll()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    // SIGCHLD wakes us early; the slice bounds the wait if another child's SIGCHLD
    // was consumed elsewhere (pending signals of one kind merge into one).
    const sigset_t set = [] {
      sigset_t s;
      sigemptyset(&s);
      sigaddset(&s, SIGCHLD);
      return s;
    }();
    const auto slice = std::min<long long>(left.count(), 100);
    const timespec ts{0, static_cast<long>(slice) * 1000000};
    (void)::sigtimedwait(&set, nullptr, &ts);
  }
  return true;
}

void child_service::kill() {
  if (poll()) return;
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
}

bool child_service::succeeded() const { return reaped_ && WIFEXITED(status_) && WEXITSTATUS(status_) == 0; }

std::string child_service::describe() const {
  if (!reaped_) return "running";
  if (WIFEXITED(status_)) return "exited with status " + std::to_string(WEXITSTATUS(status_));
  if (WIFSIGNALED(status_))
    return "killed by signal " + std::to_string(WTERMSIG(status_)) + " (" + ::strsignal(WTERMSIG(status_)) + ")";
  return "status " + std::to_string(status_);
}

}  // namespace ipcbus::examples
