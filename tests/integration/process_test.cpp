// Real processes, real sockets: delivery across process boundaries, peers that
// die or stop by signal, and peers that send garbage.
#define BOOST_TEST_MODULE process
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "ipcbus/registry.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ipcbus::test::child_process;
using ipcbus::test::eventually;
using ipcbus::test::Sample;
using ipcbus::test::scratch_domain;
namespace fs = std::filesystem;

namespace {

const std::string peer = ipcbus::test::built_program("ipcbus_test_peer");

std::size_t files_named(const fs::path& dir, const std::string& prefix) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with(prefix)) ++n;
  return n;
}

std::uint64_t publisher_id_of(const fs::path& dir, const std::string& topic) {
  for (const auto& p : ipcbus::list_participants(dir, true))
    if (p.info.role() == ipcbus::ROLE_PUBLISHER && p.info.topic() == topic) return p.info.id();
  return 0;
}

// A publisher that is not one: a listening unix socket registered in the domain
// like a real publisher, which then writes whatever the test wants.
class fake_publisher {
 public:
  fake_publisher(const fs::path& dir, const std::string& topic) {
    ipcbus::Participant info;
    info.set_id(ipcbus::random_id());
    info.set_role(ipcbus::ROLE_PUBLISHER);
    info.set_topic(topic);
    info.set_type_name("ipcbus.test.Sample");
    info.set_transport("unix");
    info.set_max_message(64 << 20);
    const fs::path sock = dir / (ipcbus::id_to_hex(info.id()) + ".sock");
    info.set_endpoint("unix://" + sock.string());
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
    BOOST_REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    BOOST_REQUIRE(::listen(listen_fd_, 4) == 0);
    std::error_code ec;
    entry_ = ipcbus::registration::create(dir, info, ec);
    BOOST_REQUIRE(!ec);
  }
  ~fake_publisher() {
    if (conn_fd_ >= 0) ::close(conn_fd_);
    ::close(listen_fd_);
  }
  void accept_and_send(const std::string& bytes) {
    conn_fd_ = ::accept(listen_fd_, nullptr, nullptr);
    BOOST_REQUIRE(conn_fd_ >= 0);
    BOOST_REQUIRE(::send(conn_fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  }

 private:
  int listen_fd_ = -1;
  int conn_fd_ = -1;
  std::unique_ptr<ipcbus::registration> entry_;
};

long resident_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

BOOST_AUTO_TEST_CASE(messages_cross_process_boundaries_complete_and_intact) {
  scratch_domain d;
  for (const char* transport : {"unix", "tcp"}) {
    const auto cfg = d.write_config(std::string("defaults: { transport: ") + transport + " }\n");
    child_process sub(peer, {"subscribe", cfg.string(), "xproc/data", "3000", "30000"});
    child_process pub(peer, {"publish", cfg.string(), "xproc/data", "3000", "2000", "0", "1"});
    BOOST_TEST(pub.wait(60s) == 0);
    BOOST_TEST(sub.wait(60s) == 0);
    BOOST_TEST(sub.output().find("received 3000 lost 0 corrupt 0 out_of_order 0") != std::string::npos,
               transport << ": " << sub.output());
  }
}

BOOST_AUTO_TEST_CASE(sigkilled_publisher_is_noticed_and_its_files_are_reclaimed) {
  scratch_domain d;
  const auto cfg = d.write_config("defaults: { transport: unix }\n");
  ipcbus::Bus bus(d.options("defaults: { transport: unix }\n"));
  auto sub = bus.subscribe<Sample>("svc/#");
  child_process pub(peer, {"serve", cfg.string(), "svc/heartbeat"});
  BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
  BOOST_REQUIRE(sub.receive(5s).has_value());
  const auto id = ipcbus::id_to_hex(publisher_id_of(d.domain_dir(), "svc/heartbeat"));
  BOOST_REQUIRE(files_named(d.domain_dir(), id) >= 3u);  // entry, stats, socket
  pub.signal(SIGKILL);
  pub.wait(10s);
  BOOST_TEST(eventually([&] { return sub.publisher_count() == 0; }));
  const auto removed = ipcbus::reclaim_stale(d.domain_dir());
  BOOST_TEST(removed.size() >= 3u);
  BOOST_TEST(files_named(d.domain_dir(), id) == 0u);
}

BOOST_AUTO_TEST_CASE(sigkilled_subscriber_does_not_block_a_reliable_publisher) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: unix, qos: reliable, depth: 4, publish_timeout_ms: 2000 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  auto pub = bus.advertise<Sample>("work/items");
  child_process sub(peer, {"subscribe", cfg.string(), "work/items", "1000000", "60000"});
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  ::kill(sub.pid(), SIGSTOP);  // it stops reading: a reliable publisher now fills its queue
  std::error_code ec;
  for (int i = 0; i < 100000 && !ec; ++i) pub.publish(ipcbus::test::make_sample(i, 1000), ec);
  BOOST_TEST(ec == ipcbus::errc::timed_out);  // a stopped subscriber costs a timeout, not a hang
  sub.signal(SIGKILL);
  sub.wait(10s);
  for (int i = 0; i < 1000; ++i) {
    pub.publish(ipcbus::test::make_sample(i, 1000), ec);
    BOOST_REQUIRE(!ec);
  }
  BOOST_TEST(pub.subscriber_count() == 0u);
}

BOOST_AUTO_TEST_CASE(sigterm_stops_a_process_gracefully_and_it_removes_its_files) {
  scratch_domain d;
  const auto cfg = d.write_config("defaults: { transport: unix }\n");
  child_process pub(peer, {"serve", cfg.string(), "svc/status"});
  BOOST_REQUIRE(eventually([&] { return publisher_id_of(d.domain_dir(), "svc/status") != 0; }));
  const auto id = ipcbus::id_to_hex(publisher_id_of(d.domain_dir(), "svc/status"));
  pub.signal(SIGTERM);
  const int status = pub.wait(10s);
  BOOST_REQUIRE(status != -1);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
  BOOST_TEST(pub.output().find("stopped by signal 15") != std::string::npos);
  BOOST_TEST(files_named(d.domain_dir(), id) == 0u);
}

BOOST_AUTO_TEST_CASE(garbage_from_a_publisher_closes_only_that_link) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: unix }\n"));
  auto sub = bus.subscribe<Sample>("feed/#");
  fake_publisher liar(d.domain_dir(), "feed/fake");
  BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
  liar.accept_and_send(std::string("\x05\xff\xff\xff\xff\xff\xff\xff", 8));  // a frame that is no frame
  BOOST_REQUIRE(eventually([&] { return sub.counters()->bad_frames.load() == 1; }));
  BOOST_TEST(eventually([&] { return sub.publisher_count() == 0u; }));
  auto honest = bus.advertise<Sample>("feed/real");
  BOOST_REQUIRE(honest.wait_for_subscribers(1, 10s));
  honest.publish(ipcbus::test::make_sample(1, 10));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->info.topic == "feed/real");
}

BOOST_AUTO_TEST_CASE(huge_length_prefix_is_refused_before_any_allocation) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: unix, max_message: 1MiB }\n"));
  auto sub = bus.subscribe<Sample>("feed/#");
  fake_publisher liar(d.domain_dir(), "feed/fake");
  BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
  const long before = resident_kib();
  liar.accept_and_send(std::string("\xff\xff\xff\xff\x0f", 5));  // claims a 4 GiB frame
  BOOST_REQUIRE(eventually([&] { return sub.counters()->bad_frames.load() == 1; }));
  BOOST_TEST(resident_kib() - before < 64 * 1024);
  BOOST_TEST(eventually([&] { return sub.publisher_count() == 0u; }));
}

BOOST_AUTO_TEST_CASE(bytes_from_a_rogue_subscriber_do_not_disturb_the_publisher) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: unix }\n"));
  auto pub = bus.advertise<Sample>("feed/data");
  auto sub = bus.subscribe<Sample>("feed/data");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  const fs::path sock = d.domain_dir() / (ipcbus::id_to_hex(pub.id()) + ".sock");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
  BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string junk(100000, '\xff');
  (void)::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  BOOST_REQUIRE(pub.wait_for_subscribers(2, 10s));
  for (int i = 1; i <= 100; ++i) pub.publish(ipcbus::test::make_sample(i, 10));
  for (int i = 1; i <= 100; ++i) {
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.index() == static_cast<std::uint64_t>(i));
  }
  ::close(fd);
}

BOOST_AUTO_TEST_CASE(hostile_topic_names_are_refused_and_create_nothing) {
  scratch_domain d;
  ipcbus::Bus bus(d.options());
  for (const std::string& topic : std::vector<std::string>{"../../etc/passwd", "/abs", "a//b", std::string("nul\0byte", 8), "a/./b",
                                  std::string(300, 'x')}) {
    std::error_code ec;
    auto pub = bus.advertise<Sample>(topic, ec);
    BOOST_TEST(ec == ipcbus::errc::invalid_topic);
    BOOST_TEST(!pub);
    auto sub = bus.subscribe<Sample>(topic, ec);
    BOOST_TEST(ec == ipcbus::errc::invalid_topic);
  }
  BOOST_TEST(fs::is_empty(d.domain_dir()));
  BOOST_TEST(!fs::exists(d.runtime_dir() / "etc"));
}

BOOST_AUTO_TEST_CASE(a_broken_config_file_is_reported_with_file_and_line) {
  scratch_domain d;
  const fs::path bad = d.runtime_dir() / "broken.yaml";
  std::ofstream(bad) << "domain: x\ndefaults:\n  transport: unix\n  qos: fastest\n";
  child_process p(peer, {"serve", bad.string(), "svc/x"});
  const int status = p.wait(10s);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 1);
  BOOST_CHECK_THROW(ipcbus::load_config_file(bad), ipcbus::config_error);
  try {
    ipcbus::load_config_file(bad);
  } catch (const ipcbus::config_error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("broken.yaml:4") != std::string::npos, what);
    BOOST_TEST(what.find("qos") != std::string::npos, what);
  }
}
