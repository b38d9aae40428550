#include "bench_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <system_error>
#include <thread>

#include "ipcbus/registry.hpp"
#ifdef IPCBUS_HAVE_SHM
#include "ipcbus/transports/shm.hpp"
#endif

namespace ipcbus::bench {
namespace {

volatile sig_atomic_t interrupted_flag = 0;

void on_interrupt(int) { interrupted_flag = 1; }

// Reports travel as text: one "key value..." line each, samples on one line.
std::string encode(const child_report& r) {
  std::ostringstream out;
  out << "messages " << r.messages << "\nfirst " << r.first_ns << "\nlast " << r.last_ns << "\ncpu "
      << r.cpu_ns << "\nhwm " << r.hwm_kib << "\nsamples " << r.samples_ns.size();
  for (auto s : r.samples_ns) out << ' ' << s;
  out << '\n';
  if (!r.error.empty()) out << "error " << r.error << '\n';
  out << "end\n";
  return out.str();
}

bool decode(const std::string& text, child_report& r) {
  std::istringstream in(text);
  std::string key;
  bool complete = false;
  while (in >> key) {
    if (key == "messages") in >> r.messages;
    else if (key == "first") in >> r.first_ns;
    else if (key == "last") in >> r.last_ns;
    else if (key == "cpu") in >> r.cpu_ns;
    else if (key == "hwm") in >> r.hwm_kib;
    else if (key == "samples") {
      std::size_t n = 0;
      in >> n;
      r.samples_ns.resize(n);
      for (auto& s : r.samples_ns) in >> s;
    } else if (key == "error") {
      std::getline(in, r.error);
      if (!r.error.empty() && r.error.front() == ' ') r.error.erase(0, 1);
    } else if (key == "end") {
      complete = true;
    } else {
      return false;
    }
    if (!in) return false;
  }
  return complete;
}

void write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

[[noreturn]] void run_child(const child_spec& spec, int report_fd) {
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  if (spec.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(spec.cpu, &set);
    ::sched_setaffinity(0, sizeof set, &set);  // best effort: an unpinned run still measures
  }
  child_report report;
  try {
    report = spec.body();
  } catch (const std::exception& e) {
    report.error = e.what();
  }
  if (report.error.find('\n') != std::string::npos) report.error = report.error.substr(0, report.error.find('\n'));
  write_all(report_fd, encode(report));
  ::close(report_fd);
  ::_exit(report.error.empty() ? 0 : 1);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by ") + ::strsignal(WTERMSIG(status));
  return "ended with status " + std::to_string(status);
}

struct running_child {
  pid_t pid = -1;
  int fd = -1;  // read end of its report pipe; -1 once at EOF
  std::string text;
  bool decoded = false;
  bool reaped = false;
  int status = 0;
};

void kill_and_reap(std::vector<running_child>& children) {
  for (auto& c : children)
    if (c.pid > 0 && !c.reaped) ::kill(c.pid, SIGKILL);
  for (auto& c : children) {
    if (c.pid > 0 && !c.reaped) {
      while (::waitpid(c.pid, &c.status, 0) < 0 && errno == EINTR) {
      }
      c.reaped = true;
    }
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
  }
}

// Reads what is available from every open pipe; false when a deadline or a signal ends the wait.
bool pump(std::vector<running_child>& children, std::chrono::steady_clock::time_point deadline) {
  std::vector<pollfd> fds;
  std::vector<running_child*> owners;
  for (auto& c : children)
    if (c.fd >= 0) {
      fds.push_back({c.fd, POLLIN, 0});
      owners.push_back(&c);
    }
  if (fds.empty()) return true;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  const int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::min<long>(left.count(), 200)));
  if (n < 0 && errno != EINTR) return false;
  for (std::size_t i = 0; n > 0 && i < fds.size(); ++i) {
    if (!fds[i].revents) continue;
    char buf[65536];
    const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
    if (got > 0) {
      owners[i]->text.append(buf, static_cast<std::size_t>(got));
    } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
      ::close(owners[i]->fd);
      owners[i]->fd = -1;
    }
  }
  return true;
}

}  // namespace

bool run_children(const std::vector<child_spec>& specs, std::chrono::milliseconds timeout,
                  std::vector<child_report>& reports, std::string& error) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<running_child> children(specs.size());
  std::cout.flush();  // a child must not flush the parent's buffered output again
  std::cerr.flush();
  std::fflush(nullptr);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
      error = std::string("pipe: ") + std::strerror(errno);
      kill_and_reap(children);
      return false;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (std::size_t j = 0; j < i; ++j) ::close(children[j].fd);
      ::close(p[0]);
      run_child(specs[i], p[1]);
    }
    ::close(p[1]);
    if (pid < 0) {
      ::close(p[0]);
      error = std::string("fork: ") + std::strerror(errno);
      kill_and_reap(children);
      return false;
    }
    children[i].pid = pid;
    children[i].fd = p[0];
  }
  reports.assign(specs.size(), {});
  for (;;) {
    if (interrupted()) {
      error = "interrupted";
      kill_and_reap(children);
      return false;
    }
    bool open = false;
    for (std::size_t i = 0; i < children.size(); ++i) {
      auto& c = children[i];
      if (c.fd >= 0) {
        open = true;
        continue;
      }
      if (c.reaped) continue;
      // At EOF: the report is complete, or the child died. Either way it is ending.
      if (!c.decoded && !decode(c.text, reports[i])) {
        while (::waitpid(c.pid, &c.status, 0) < 0 && errno == EINTR) {
        }
        c.reaped = true;
        error = specs[i].role + " " + describe_status(c.status) + " without a report";
        kill_and_reap(children);
        return false;
      }
      c.decoded = true;
      if (!reports[i].error.empty()) {
        error = specs[i].role + ": " + reports[i].error;
        kill_and_reap(children);
        return false;
      }
      // Reported: its exit is imminent; reap it without blocking past the deadline.
      int status = 0;
      const pid_t got = ::waitpid(c.pid, &status, WNOHANG);
      if (got == c.pid) {
        c.reaped = true;
        c.status = status;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
          error = specs[i].role + " " + describe_status(status);
          kill_and_reap(children);
          return false;
        }
      } else {
        open = true;
      }
    }
    if (!open) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string late;
      for (std::size_t i = 0; i < children.size(); ++i)
        if (!children[i].reaped) late += (late.empty() ? "" : ", ") + specs[i].role;
      error = "no result within " + std::to_string(timeout.count() / 1000) + " s from " + late + "; killed";
      kill_and_reap(children);
      return false;
    }
    if (!pump(children, deadline)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    bool any_open = false;
    for (auto& c : children) any_open = any_open || c.fd >= 0;
    if (!any_open) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR and the loop notices at once
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

bool interrupted() { return interrupted_flag != 0; }

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t cpu_time_ns() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto ns = [](const timeval& t) { return std::int64_t(t.tv_sec) * 1'000'000'000 + std::int64_t(t.tv_usec) * 1000; };
  return ns(u.ru_utime) + ns(u.ru_stime);
}

namespace {
std::int64_t status_kib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::atoll(line.c_str() + key.size() + 1);
  return 0;
}
}  // namespace

std::int64_t peak_rss_kib() { return status_kib("VmHWM"); }
std::int64_t rss_kib() { return status_kib("VmRSS"); }

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int i = 0; i < CPU_SETSIZE; ++i)
    if (CPU_ISSET(i, &set)) out.push_back(i);
  return out;
}

scratch_dir::scratch_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp == '/' ? tmp : "/tmp") + "/ipcbus-bench-XXXXXX";
  if (!::mkdtemp(pattern.data()))
    throw std::system_error(errno, std::generic_category(), "cannot create a directory like " + pattern);
  path_ = pattern;
}

scratch_dir::~scratch_dir() {
  const auto domain_dir = path_ / domain();
  std::error_code ec;
  if (std::filesystem::exists(domain_dir, ec)) {
    // Children that were killed left their registry files and, on shm, their
    // segments in /dev/shm: reclaim them as `ipcbus gc` would. Every process of
    // this domain is gone by now, so the shm markers (<id>.shm) go first: a
    // publisher killed before its ring was complete is otherwise kept as "being
    // built" (and then found by nothing once the directory is deleted).
    try {
      reclaim_stale(domain_dir);
      for (const auto& e : std::filesystem::directory_iterator(domain_dir, ec))
        if (e.path().extension() == ".shm") std::filesystem::remove(e.path(), ec);
#ifdef IPCBUS_HAVE_SHM
      transport::shm::reclaim_shm_segments(domain_dir);
#endif
    } catch (const std::exception& e) {
      std::cerr << "ipcbus bench: reclaiming " << domain_dir.string() << ": " << e.what() << '\n';
    }
  }
  std::filesystem::remove_all(path_, ec);
}

shared_block::shared_block(std::size_t size) : size_(size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap of shared memory");
  data_ = p;
}

shared_block::~shared_block() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace ipcbus::bench
