// Local security with real users: a domain shared through `security.group`
// works between two members with different uids, on every transport that
// checks credentials (shm, unix, pipe, mq), and a third user who is not a
// member can neither read nor inject: the runtime directory keeps it out of
// the FIFOs, sockets and registry, and the 0660 group-owned segments and
// queues (flat namespaces, no directory in front) refuse it too.
//
// The test makes its users and group itself (useradd/groupadd), so it needs
// root; as any other user it is skipped, and says so.
#define BOOST_TEST_MODULE security
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <grp.h>
#include <mqueue.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "ipcbus/registry.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ipcbus::test::child_process;
namespace fs = std::filesystem;

namespace {

const std::string group_name = "ipcbus-t-share";
const std::string member_a = "ipcbus-t-a";
const std::string member_b = "ipcbus-t-b";
const std::string stranger = "ipcbus-t-x";

struct run_as_root {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(::geteuid() == 0 && ::access("/usr/sbin/useradd", X_OK) == 0 &&
                                          ::access("/usr/bin/setpriv", X_OK) == 0 &&
                                          ::access("/etc/passwd", W_OK) == 0 && ::access("/etc/group", W_OK) == 0);
    r.message() << "needs root, useradd, setpriv and a writable /etc/passwd to make a second and third user";
    return r;
  }
};

bool run(const std::string& command) { return std::system(command.c_str()) == 0; }

// Users and group made for the test, removed at its end. Members get the
// group as a supplementary group only, so that their credentials on a socket
// (primary gid `users`) do not show it: the check must look it up.
struct test_users {
  test_users() {
    remove();
    BOOST_REQUIRE(run("groupadd " + group_name));
    BOOST_REQUIRE(run("useradd -M -N -g users -G " + group_name + " -s /usr/sbin/nologin " + member_a));
    BOOST_REQUIRE(run("useradd -M -N -g users -G " + group_name + " -s /usr/sbin/nologin " + member_b));
    BOOST_REQUIRE(run("useradd -M -N -g users -s /usr/sbin/nologin " + stranger));
    gid = ::getgrnam(group_name.c_str())->gr_gid;
    stranger_uid = ::getpwnam(stranger.c_str())->pw_uid;
  }
  ~test_users() { remove(); }
  static void remove() {
    for (const auto& u : {member_a, member_b, stranger}) (void)run("userdel " + u + " >/dev/null 2>&1");
    (void)run("groupdel " + group_name + " >/dev/null 2>&1");
  }
  gid_t gid = 0;
  uid_t stranger_uid = 0;
};

// A runtime directory the group can use and nobody else can enter, with a
// copy of the peer program in it (the build tree may be private to root).
struct shared_runtime {
  explicit shared_runtime(gid_t gid, const std::string& transport) {
    char tmpl[] = "/tmp/ipcbus-sec-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl));
    dir = tmpl;
    BOOST_REQUIRE(::chown(dir.c_str(), 0, gid) == 0);
    BOOST_REQUIRE(::chmod(dir.c_str(), 02770) == 0);
    peer = dir / "peer";
    fs::copy_file(ipcbus::test::built_program("ipcbus_test_peer"), peer);
    BOOST_REQUIRE(::chmod(peer.c_str(), 0755) == 0);
    cli = dir / "ipcbus";
    fs::copy_file(ipcbus::test::built_program("ipcbus"), cli);
    BOOST_REQUIRE(::chmod(cli.c_str(), 0755) == 0);
    config = dir / "bus.yaml";
    std::ofstream(config) << "domain: shared\nruntime_dir: " << dir.string() << "\nsecurity: { group: " << group_name
                          << " }\ndefaults: { transport: " << transport << " }\n";
    BOOST_REQUIRE(::chmod(config.c_str(), 0644) == 0);
  }
  ~shared_runtime() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  child_process as(const std::string& user, std::vector<std::string> args, const fs::path& program = {}) const {
    std::vector<std::string> argv = {"--reuid=" + user, "--regid=users", "--init-groups",
                                     (program.empty() ? peer : program).string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return child_process("/usr/bin/setpriv", argv);
  }
  fs::path dir, peer, cli, config;
};

// What a user outside the group gets when it tries the objects directly.
// Runs in a forked child that drops to `uid`: 0 when every attempt was refused.
int intruder_attempts(uid_t uid, const std::vector<std::string>& shm_names, const std::vector<std::string>& mq_names,
                      const std::vector<fs::path>& paths) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const gid_t users = 100;
    if (::setgroups(0, nullptr) != 0 || ::setgid(users) != 0 || ::setuid(uid) != 0) ::_exit(100);
    int opened = 0;
    for (const auto& n : shm_names) {
      const int fd = ::shm_open(n.c_str(), O_RDWR, 0);
      if (fd >= 0 || errno != EACCES) ++opened;
      const int ro = ::shm_open(n.c_str(), O_RDONLY, 0);
      if (ro >= 0 || errno != EACCES) ++opened;
    }
    for (const auto& n : mq_names) {
      const mqd_t q = ::mq_open(n.c_str(), O_WRONLY | O_NONBLOCK);
      if (q >= 0 || errno != EACCES) ++opened;
    }
    for (const auto& p : paths) {
      const int fd = ::open(p.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0 || errno != EACCES) ++opened;
    }
    ::_exit(opened);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<std::string> shm_segments_of(const fs::path& domain_dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(domain_dir))
    if (e.path().extension() == ".shm") {
      std::ifstream in(e.path());
      std::string name;
      if (std::getline(in, name) && !name.empty()) out.push_back(name);
    }
  return out;
}

std::vector<std::string> mq_queues_of(const fs::path& domain_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(domain_dir / "mq", ec)) out.push_back("/" + e.path().filename().string());
  return out;
}

mode_t mode_of(const std::string& shm_or_path, bool shm, gid_t& gid) {
  struct stat st {};
  if (shm) {
    const int fd = ::shm_open(shm_or_path.c_str(), O_RDONLY, 0);
    if (fd < 0 || ::fstat(fd, &st) != 0) return 0;
    ::close(fd);
  } else if (::stat(shm_or_path.c_str(), &st) != 0) {
    return 0;
  }
  gid = st.st_gid;
  return st.st_mode & 07777;
}

void members_share_and_the_stranger_is_kept_out(const std::string& transport) {
  test_users users;
  shared_runtime rt(users.gid, transport);
  const std::string topic = "secure/" + transport;
  child_process pub = rt.as(member_a, {"serve", rt.config.string(), topic});
  child_process sub = rt.as(member_b, {"subscribe", rt.config.string(), topic, "20", "20000"});
  BOOST_REQUIRE_MESSAGE(sub.wait(30s) == 0, "member " << member_b << " receives from " << member_a << " over "
                                                      << transport << ": " << sub.output());
  BOOST_TEST(sub.output().find("received 20 lost 0 corrupt 0") != std::string::npos, sub.output());

  // Modes and owners of what the members made.
  const fs::path domain = rt.dir / "shared";
  gid_t gid = 0;
  BOOST_TEST(mode_of(domain.string(), false, gid) == 02770u);
  BOOST_TEST(gid == users.gid);
  for (const auto& e : fs::directory_iterator(domain)) {
    const auto st = fs::symlink_status(e.path()).type();
    if (st == fs::file_type::fifo || st == fs::file_type::socket) {
      BOOST_TEST(mode_of(e.path().string(), false, gid) == 0660u, e.path());
      BOOST_TEST(gid == users.gid, e.path());
    }
  }
  const auto segments = transport == "shm" ? shm_segments_of(domain) : std::vector<std::string>{};
  for (const auto& s : segments) {
    BOOST_TEST(mode_of(s, true, gid) == 0660u, s);
    BOOST_TEST(gid == users.gid, s);
  }
  const auto queues = mq_queues_of(domain);
  if (transport == "shm") BOOST_TEST(!segments.empty());
  if (transport == "mq") BOOST_TEST(!queues.empty());

  // `ipcbus doctor` run by the other member finds the shared directories in order.
  child_process doctor = rt.as(member_b, {"--config", rt.config.string(), "doctor"}, rt.cli);
  doctor.wait(30s);
  const std::string report = doctor.output();
  // Whichever member came first made the directory: "is this user's" or "belongs to group".
  const auto line = report.find("ok: " + domain.string() + ": ");
  BOOST_TEST((line != std::string::npos && report.find(", mode 2770", line) != std::string::npos), report);
  BOOST_TEST(report.find("problem: " + rt.dir.string()) == std::string::npos, report);

  // The stranger: its own bus cannot even enter the runtime directory...
  child_process intruder = rt.as(stranger, {"subscribe", rt.config.string(), topic, "1", "2000"});
  BOOST_TEST(intruder.wait(30s) != 0);
  // ...and every object it could name directly refuses it.
  std::vector<fs::path> paths;
  for (const auto& e : fs::directory_iterator(domain)) paths.push_back(e.path());
  BOOST_TEST(intruder_attempts(users.stranger_uid, segments, queues, paths) == 0);

  pub.signal(SIGTERM);
  BOOST_TEST(pub.wait(10s) == 0);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(shared_domain, *boost::unit_test::precondition(run_as_root()))

BOOST_AUTO_TEST_CASE(shm) { members_share_and_the_stranger_is_kept_out("shm"); }
BOOST_AUTO_TEST_CASE(unix_socket) { members_share_and_the_stranger_is_kept_out("unix"); }
BOOST_AUTO_TEST_CASE(pipe) { members_share_and_the_stranger_is_kept_out("pipe"); }
BOOST_AUTO_TEST_CASE(mq) { members_share_and_the_stranger_is_kept_out("mq"); }

BOOST_AUTO_TEST_SUITE_END()
