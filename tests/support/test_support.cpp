#include "test_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

#include <boost/test/unit_test.hpp>

namespace ipcbus::test {
namespace fs = std::filesystem;

scratch_domain::scratch_domain(std::string name) {
  char tmpl[] = "/tmp/ipcbus-t-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  runtime_dir_ = tmpl;
  if (name.empty()) {
    const auto& tc = boost::unit_test::framework::current_test_case();
    name = tc.p_name;
  }
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') c = '_';
  domain_ = name.substr(0, 60) + "-" + std::to_string(::getpid());
}

scratch_domain::~scratch_domain() {
  std::error_code ec;
  fs::remove_all(runtime_dir_, ec);
}

config scratch_domain::make_config(const std::string& yaml) const {
  config c = yaml.empty() ? config{} : parse_config(yaml, "test config");
  c.domain = domain_;
  c.runtime_dir = runtime_dir_;
  return c;
}

bus_options scratch_domain::options(const std::string& yaml) const {
  bus_options o;
  o.cfg = make_config(yaml);
  return o;
}

fs::path scratch_domain::write_config(const std::string& yaml) const {
  static int counter = 0;
  const fs::path file = runtime_dir_ / ("config-" + std::to_string(++counter) + ".yaml");
  std::ofstream out(file);
  out << "domain: " << domain_ << "\nruntime_dir: " << runtime_dir_.string() << "\n" << yaml;
  return file;
}

std::uint32_t checksum(std::string_view bytes) {
  std::uint32_t h = 2166136261u;  // FNV-1a: enough to catch a torn or mixed message
  for (char c : bytes) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return h;
}

Sample make_sample(std::uint64_t index, std::size_t body_size) {
  Sample s;
  s.set_index(index);
  std::string body(body_size, '\0');
  for (std::size_t i = 0; i < body_size; ++i) body[i] = static_cast<char>((index * 131 + i * 7) & 0xff);
  s.set_checksum(checksum(body));
  s.set_body(std::move(body));
  return s;
}

bool sample_intact(const Sample& s) { return checksum(s.body()) == s.checksum(); }

bool sample_matches_index(const Sample& s) {
  if (!sample_intact(s)) return false;
  const std::string& body = s.body();
  for (std::size_t i = 0; i < body.size(); ++i)
    if (body[i] != static_cast<char>((s.index() * 131 + i * 7) & 0xff)) return false;
  return true;
}

status_page::status_page(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + file.string());
  void* base = MAP_FAILED;
  if (::ftruncate(fd, sizeof(peer_status)) == 0)
    base = ::mmap(nullptr, sizeof(peer_status), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);
  if (base == MAP_FAILED) throw std::system_error(e, std::generic_category(), "map " + file.string());
  // A new file reads as zeros, which is every counter at 0: no construction needed.
  status_ = static_cast<peer_status*>(base);
}

status_page::~status_page() { ::munmap(status_, sizeof(peer_status)); }

child_process::child_process(const std::string& program, const std::vector<std::string>& args,
                             const std::vector<std::string>& env) {
  char tmpl[] = "/tmp/ipcbus-child-XXXXXX";
  const int out_fd = ::mkstemp(tmpl);
  output_file_ = tmpl;
  // Everything the child needs is built before fork: the parent has threads (a Bus
  // io thread), so the child may only make async-signal-safe calls until exec.
  std::vector<std::string> argv_s{program};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s(env.begin(), env.end());  // first: getenv takes the first match
  for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out_fd, STDOUT_FILENO);
    ::execve(program.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(out_fd);
}

child_process::~child_process() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
  ::unlink(output_file_.c_str());
}

void child_process::signal(int sig) const { ::kill(pid_, sig); }

bool child_process::freeze(std::chrono::milliseconds timeout) {
  if (reaped_) return false;
  ::kill(pid_, SIGSTOP);
  // The stop is reported to the parent only once the whole thread group has stopped.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG | WUNTRACED);
    if (r == pid_ && WIFSTOPPED(status)) return true;
    if (r == pid_) {
      reaped_ = true;
      status_ = status;
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

int child_process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!reaped_) {
    const pid_t r = ::waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) { reaped_ = true; break; }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

bool child_process::running() {
  if (reaped_) return false;
  return wait(std::chrono::milliseconds(0)) == -1;
}

std::string child_process::output() const {
  std::ifstream in(output_file_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string built_program(const std::string& name) {
  for (const char* dir : {"/services/cli/", "/services/bridge/", "/services/examples/", "/tests/integration/", "/tests/"}) {
    const std::string p = std::string(IPCBUS_BINARY_DIR) + dir + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return std::string(IPCBUS_BINARY_DIR) + "/" + name;
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace ipcbus::test
