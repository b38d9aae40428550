// pipe:// and mq:// with real processes, FIFOs and message queues: delivery
// across processes (fragments included), SIGKILLed publishers and subscribers
// noticed and their FIFOs/queues reclaimed, `ipcbus gc` and its dry run,
// garbage from fake publishers and in attach FIFOs/queues, and a user whose
// RLIMIT_MSGQUEUE is nearly used up.
#define BOOST_TEST_MODULE pipe_mq
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <mqueue.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "ipcbus/registry.hpp"
#include "ipcbus/transports/mqueue.hpp"
#include "ipcbus/transports/pipe.hpp"
#include "mq_names.hpp"
#include "pipe_names.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ipcbus::test::child_process;
using ipcbus::test::eventually;
using ipcbus::test::Sample;
using ipcbus::test::scratch_domain;
namespace fs = std::filesystem;
namespace mqt = ipcbus::transport::mqueue;
namespace pipet = ipcbus::transport::pipe;

namespace {

const std::string peer = ipcbus::test::built_program("ipcbus_test_peer");
const std::string cli = ipcbus::test::built_program("ipcbus");

std::size_t count_files(const fs::path& dir, const std::string& suffix) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().ends_with(suffix)) ++n;
  return n;
}

std::vector<std::string> markers(const fs::path& domain_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(mqt::marker_dir(domain_dir), ec)) out.push_back(e.path().filename());
  return out;
}

bool queue_exists(const std::string& name_without_slash) {
  const mqd_t q = ::mq_open(("/" + name_without_slash).c_str(), O_WRONLY | O_NONBLOCK);
  if (q < 0) return errno != ENOENT;
  ::mq_close(q);
  return true;
}

std::uint64_t publisher_id_of(const fs::path& dir, const std::string& topic) {
  for (const auto& p : ipcbus::list_participants(dir, true))
    if (p.info.role() == ipcbus::ROLE_PUBLISHER && p.info.topic() == topic) return p.info.id();
  return 0;
}

std::string endpoint_of(const fs::path& dir, std::uint64_t id) {
  for (const auto& p : ipcbus::list_participants(dir, true))
    if (p.info.id() == id) return p.info.endpoint();
  return {};
}

std::string yaml_for(const std::string& transport, const std::string& extra = "") {
  return "defaults: { transport: " + transport + (extra.empty() ? "" : ", " + extra) + " }\n";
}

// A registered participant that claims to publish `topic` at `endpoint` but
// is the test itself, so that it can send whatever it likes.
std::unique_ptr<ipcbus::registration> register_fake(const fs::path& dir, std::uint64_t id, const std::string& topic,
                                                    const std::string& transport, const std::string& endpoint) {
  ipcbus::Participant info;
  info.set_id(id);
  info.set_role(ipcbus::ROLE_PUBLISHER);
  info.set_topic(topic);
  info.set_type_name("ipcbus.test.Sample");
  info.set_transport(transport);
  info.set_max_message(64 << 20);
  info.set_pid(::getpid());
  info.set_endpoint(endpoint);
  std::error_code ec;
  auto r = ipcbus::registration::create(dir, info, ec);
  BOOST_REQUIRE(!ec);
  return r;
}

// A fake pipe:// publisher: its attach FIFO, and the data FIFO of the first subscriber that attaches.
class fake_pipe_publisher {
 public:
  fake_pipe_publisher(const fs::path& dir, const std::string& topic) : dir_(dir), id_(ipcbus::random_id()) {
    const auto path = pipet::attach_fifo_path(dir, id_);
    BOOST_REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    attach_fd_ = ::open(path.c_str(), O_RDWR | O_NONBLOCK);
    BOOST_REQUIRE(attach_fd_ >= 0);
    entry_ = register_fake(dir, id_, topic, "pipe", "pipe://" + path.string());
  }
  ~fake_pipe_publisher() {
    if (data_fd_ >= 0) ::close(data_fd_);
    ::close(attach_fd_);
  }
  void accept_and_send(const std::string& bytes) {
    pollfd p{attach_fd_, POLLIN, 0};
    BOOST_REQUIRE(::poll(&p, 1, 10000) == 1);
    char record[pipet::attach_record_size];
    BOOST_REQUIRE(::read(attach_fd_, record, sizeof record) == static_cast<ssize_t>(sizeof record));
    const auto r = pipet::decode_attach(record);
    BOOST_REQUIRE(r.has_value());
    data_fd_ = ::open(pipet::data_fifo_path(dir_, id_, r->link_id).c_str(), O_WRONLY | O_NONBLOCK);
    BOOST_REQUIRE(data_fd_ >= 0);
    BOOST_REQUIRE(::write(data_fd_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  }

 private:
  fs::path dir_;
  std::uint64_t id_;
  int attach_fd_ = -1;
  int data_fd_ = -1;
  std::unique_ptr<ipcbus::registration> entry_;
};

// A fake mq:// publisher: its attach queue, and the queue of the first subscriber that attaches.
class fake_mq_publisher {
 public:
  fake_mq_publisher(const fs::path& dir, const std::string& topic) {
    name_.hash = mqt::queue_prefix(dir).substr(7, 16);
    name_.publisher_id = ipcbus::random_id();
    name_.owner_pid = static_cast<std::uint32_t>(::getpid());
    mq_attr attr{};
    attr.mq_maxmsg = 4;
    attr.mq_msgsize = mqt::control_size;
    attach_ = ::mq_open(name_.text().c_str(), O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
    BOOST_REQUIRE(attach_ >= 0);
    entry_ = register_fake(dir, name_.publisher_id, topic, "mq", mqt::make_uri(dir, name_));
  }
  ~fake_mq_publisher() {
    if (data_ >= 0) ::mq_close(data_);
    ::mq_close(attach_);
    ::mq_unlink(name_.text().c_str());
  }
  void accept() {
    char msg[mqt::control_size];
    timespec deadline{};
    ::clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    BOOST_REQUIRE(::mq_timedreceive(attach_, msg, sizeof msg, nullptr, &deadline) == static_cast<ssize_t>(sizeof msg));
    const auto m = mqt::decode_control(msg, sizeof msg);
    BOOST_REQUIRE(m.has_value());
    auto q = name_;
    q.link_id = m->link_id;
    q.owner_pid = m->pid;
    data_ = ::mq_open(q.text().c_str(), O_WRONLY | O_NONBLOCK);
    BOOST_REQUIRE(data_ >= 0);
  }
  void send(const std::string& message) { BOOST_REQUIRE(::mq_send(data_, message.data(), message.size(), 0) == 0); }
  static std::string message(mqt::message_kind kind, std::uint32_t index, std::uint64_t total, const std::string& body) {
    std::string m(mqt::header_size, '\0');
    mqt::encode_header(m.data(), {kind, index, total});
    return m + body;
  }

 private:
  mqt::queue_name name_;
  mqd_t attach_ = -1;
  mqd_t data_ = -1;
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

BOOST_AUTO_TEST_CASE(messages_cross_process_boundaries_whole_and_in_fragments) {
  scratch_domain d;
  // 20 000-byte bodies are several mq messages each: fragments cross processes too.
  for (const char* transport : {"pipe", "mq"}) {
    for (const char* size : {"100", "20000"}) {
      const auto cfg = d.write_config(yaml_for(transport));
      child_process sub(peer, {"subscribe", cfg.string(), "xproc/data", "2000", "30000"});
      child_process pub(peer, {"publish", cfg.string(), "xproc/data", "2000", size, "0", "1"});
      BOOST_TEST(pub.wait(60s) == 0);
      BOOST_TEST(sub.wait(60s) == 0);
      BOOST_TEST(sub.output().find("received 2000 lost 0 corrupt 0 out_of_order 0") != std::string::npos,
                 transport << " " << size << ": " << sub.output());
    }
  }
  BOOST_TEST(count_files(d.domain_dir(), ".fifo") == 0u);
  BOOST_TEST(count_files(d.domain_dir(), ".pipe") == 0u);
  BOOST_TEST(markers(d.domain_dir()).empty());
}

BOOST_AUTO_TEST_CASE(sigkilled_publisher_is_noticed_and_its_fifos_and_queues_are_reclaimed) {
  for (const char* transport : {"pipe", "mq"}) {
    scratch_domain d;
    const auto cfg = d.write_config(yaml_for(transport));
    ipcbus::Bus bus(d.options(yaml_for(transport)));
    auto sub = bus.subscribe<Sample>("svc/#");
    child_process pub(peer, {"serve", cfg.string(), "svc/heartbeat"});
    BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
    BOOST_REQUIRE(sub.receive(5s).has_value());
    if (std::string(transport) == "mq") BOOST_TEST(markers(d.domain_dir()).size() == 2u);  // attach + data queue
    else BOOST_TEST(count_files(d.domain_dir(), ".fifo") == 1u);
    pub.signal(SIGKILL);
    pub.wait(10s);
    BOOST_TEST(eventually([&] { return sub.publisher_count() == 0; }), transport);
    ipcbus::reclaim_stale(d.domain_dir());
    BOOST_TEST(count_files(d.domain_dir(), ".fifo") == 0u, transport);
    BOOST_TEST(count_files(d.domain_dir(), ".pipe") == 0u, transport);
    // The subscriber unlinked its own queue and, having seen the publisher die, the attach queue too.
    for (const auto& m : markers(d.domain_dir())) BOOST_TEST(!queue_exists(m), m);
    BOOST_TEST(markers(d.domain_dir()).empty(), transport);
  }
}

BOOST_AUTO_TEST_CASE(sigkilled_subscriber_is_dropped_and_a_reliable_publisher_carries_on) {
  for (const char* transport : {"pipe", "mq"}) {
    scratch_domain d;
    const std::string yaml = yaml_for(transport, "qos: reliable, depth: 4, publish_timeout_ms: 2000");
    const auto cfg = d.write_config(yaml);
    ipcbus::Bus bus(d.options(yaml));
    auto pub = bus.advertise<Sample>("work/items");
    child_process sub(peer, {"subscribe", cfg.string(), "work/items", "1000000", "60000"});
    BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
    ::kill(sub.pid(), SIGSTOP);  // it stops reading: the reliable publisher fills its queue
    std::error_code ec;
    for (int i = 0; i < 100000 && !ec; ++i) pub.publish(ipcbus::test::make_sample(i, 1000), ec);
    BOOST_TEST(ec == ipcbus::errc::timed_out, transport);
    sub.signal(SIGKILL);
    sub.wait(10s);
    for (int i = 0; i < 1000; ++i) {
      pub.publish(ipcbus::test::make_sample(i, 1000), ec);
      BOOST_REQUIRE_MESSAGE(!ec, transport << ": " << ec.message());
    }
    BOOST_TEST(eventually([&] { return pub.subscriber_count() == 0u; }), transport);
    BOOST_TEST(pub.counters().peers_lost == 1u, transport);
    // The publisher removed the dead subscriber's FIFO / queue and marker.
    BOOST_TEST(eventually([&] { return count_files(d.domain_dir(), ".fifo") == 0u; }), transport);
    BOOST_TEST(eventually([&] { return markers(d.domain_dir()).size() == (std::string(transport) == "mq" ? 1u : 0u); }),
               transport);
  }
}

BOOST_AUTO_TEST_CASE(gc_reclaims_the_queues_and_fifos_of_a_sigkilled_pair_after_a_dry_run) {
  for (const char* transport : {"mq", "pipe"}) {
    scratch_domain d;
    const auto cfg = d.write_config(yaml_for(transport));
    child_process pub(peer, {"serve", cfg.string(), "svc/beat"});
    child_process sub(peer, {"subscribe", cfg.string(), "svc/beat", "1000000", "60000"});
    BOOST_REQUIRE(eventually([&] { return publisher_id_of(d.domain_dir(), "svc/beat") != 0; }));
    // Both queues made, each with its marker (a marker may briefly exist before its queue).
    const auto settled = [&] {
      const auto now = markers(d.domain_dir());
      return now.size() == 2u && std::all_of(now.begin(), now.end(), queue_exists);
    };
    if (std::string(transport) == "mq") BOOST_REQUIRE(eventually(settled));
    else BOOST_REQUIRE(eventually([&] { return count_files(d.domain_dir(), ".fifo") == 1u; }));
    // Both stopped before either dies: a survivor that noticed its peer's death
    // would reclaim the dead one's queue itself, before gc could find it.
    BOOST_REQUIRE(sub.freeze());
    BOOST_REQUIRE(pub.freeze());
    const auto names = markers(d.domain_dir());
    if (std::string(transport) == "mq") BOOST_REQUIRE(settled());
    sub.signal(SIGKILL);
    pub.signal(SIGKILL);
    sub.wait(10s);
    pub.wait(10s);
    child_process dry(cli, {"--config", cfg.string(), "gc", "--dry-run"});
    BOOST_REQUIRE(dry.wait(30s) == 0);
    for (const auto& m : names) {
      BOOST_TEST(dry.output().find("stale message queue: /" + m) != std::string::npos, dry.output());
      BOOST_TEST(queue_exists(m));  // a dry run removes nothing
    }
    BOOST_TEST(dry.output().find("2 stale participant(s)") != std::string::npos, dry.output());
    child_process real(cli, {"--config", cfg.string(), "gc"});
    BOOST_REQUIRE(real.wait(30s) == 0);
    for (const auto& m : names) {
      BOOST_TEST(real.output().find("removed message queue /" + m) != std::string::npos, real.output());
      BOOST_TEST(!queue_exists(m));
    }
    BOOST_TEST(markers(d.domain_dir()).empty());
    BOOST_TEST(count_files(d.domain_dir(), ".fifo") == 0u, transport);
    BOOST_TEST(count_files(d.domain_dir(), ".pipe") == 0u, transport);
  }
}

BOOST_AUTO_TEST_CASE(orphaned_fifos_nobody_reads_are_reclaimed_and_read_ones_are_not) {
  scratch_domain d;
  fs::create_directories(d.domain_dir());
  const auto orphan = pipet::data_fifo_path(d.domain_dir(), 0x1234, 0x5678);
  const auto used = pipet::data_fifo_path(d.domain_dir(), 0x1234, 0x9abc);
  BOOST_REQUIRE(::mkfifo(orphan.c_str(), 0600) == 0);
  BOOST_REQUIRE(::mkfifo(used.c_str(), 0600) == 0);
  const int reader = ::open(used.c_str(), O_RDWR | O_NONBLOCK);
  BOOST_REQUIRE(reader >= 0);
  BOOST_TEST(pipet::reclaim_orphaned_fifos(d.domain_dir(), false).empty());  // both too young
  const auto dry = pipet::reclaim_orphaned_fifos(d.domain_dir(), true, 0s);
  BOOST_TEST(dry.size() == 1u);
  BOOST_TEST(fs::exists(orphan));
  const auto removed = pipet::reclaim_orphaned_fifos(d.domain_dir(), false, 0s);
  BOOST_REQUIRE(removed.size() == 1u);
  BOOST_TEST(removed[0] == orphan);
  BOOST_TEST(!fs::exists(orphan));
  BOOST_TEST(fs::exists(used));
  ::close(reader);
}

BOOST_AUTO_TEST_CASE(garbage_from_a_fake_pipe_publisher_closes_only_that_link) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml_for("pipe", "max_message: 1MiB")));
  auto sub = bus.subscribe<Sample>("feed/#");
  {
    fake_pipe_publisher liar(d.domain_dir(), "feed/fake");
    BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
    const long before = resident_kib();
    liar.accept_and_send(std::string("\xff\xff\xff\xff\x0f", 5));  // claims a 4 GiB frame
    BOOST_REQUIRE(eventually([&] { return sub.counters()->bad_frames.load() == 1; }));
    BOOST_TEST(resident_kib() - before < 64 * 1024);
    BOOST_TEST(eventually([&] { return sub.publisher_count() == 0u; }));
  }
  {
    fake_pipe_publisher liar(d.domain_dir(), "feed/fake2");
    BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
    liar.accept_and_send(std::string("\x05\xff\xff\xff\xff\xff\xff\xff", 8));  // a frame that is no frame
    BOOST_REQUIRE(eventually([&] { return sub.counters()->bad_frames.load() == 2; }));
  }
  auto honest = bus.advertise<Sample>("feed/real");
  BOOST_REQUIRE(honest.wait_for_subscribers(1, 10s));
  honest.publish(ipcbus::test::make_sample(1, 10));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->info.topic == "feed/real");
}

BOOST_AUTO_TEST_CASE(malformed_mq_messages_close_only_that_link_without_large_allocations) {
  using kind = mqt::message_kind;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bad header", std::string(40, '\x07')},
      {"4 GiB fragmented frame", fake_mq_publisher::message(kind::first, 0, 4ull << 30, std::string(100, 'x'))},
      {"fragment without a start", fake_mq_publisher::message(kind::middle, 3, 1000, std::string(100, 'x'))},
      {"whole message with a lying prefix", fake_mq_publisher::message(kind::whole, 0, 3, "\x7f\x01\x02")},
  };
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml_for("mq", "max_message: 1MiB")));
  auto sub = bus.subscribe<Sample>("feed/#");
  std::uint64_t expected = 0;
  for (const auto& [what, bytes] : cases) {
    fake_mq_publisher liar(d.domain_dir(), "feed/fake");
    BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
    liar.accept();
    const long before = resident_kib();
    liar.send(bytes);
    ++expected;
    BOOST_REQUIRE_MESSAGE(eventually([&] { return sub.counters()->bad_frames.load() == expected; }), what);
    BOOST_TEST(resident_kib() - before < 64 * 1024, what);
    BOOST_TEST(eventually([&] { return sub.publisher_count() == 0u; }), what);
  }
  BOOST_TEST(markers(d.domain_dir()).empty());  // the links removed their queues
  auto honest = bus.advertise<Sample>("feed/real");
  BOOST_REQUIRE(honest.wait_for_subscribers(1, 10s));
  honest.publish(ipcbus::test::make_sample(1, 50000));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(ipcbus::test::sample_intact(r->message));
}

BOOST_AUTO_TEST_CASE(garbage_in_attach_fifos_and_queues_is_refused_and_subscribers_still_attach) {
  for (const char* transport : {"pipe", "mq"}) {
    scratch_domain d;
    ipcbus::Bus bus(d.options(yaml_for(transport)));
    auto pub = bus.advertise<Sample>("in/x");
    const std::string uri = endpoint_of(d.domain_dir(), pub.id());
    if (std::string(transport) == "pipe") {
      const int fd = ::open(uri.substr(7).c_str(), O_WRONLY | O_NONBLOCK);
      BOOST_REQUIRE(fd >= 0);
      const std::string junk(45, '\x42');  // not a whole number of records: the next one starts mid-buffer
      BOOST_REQUIRE(::write(fd, junk.data(), junk.size()) == 45);
      ::close(fd);
    } else {
      const auto target = mqt::parse_uri(uri);
      BOOST_REQUIRE(target.has_value());
      const mqd_t q = ::mq_open(target->queue.text().c_str(), O_WRONLY | O_NONBLOCK);
      BOOST_REQUIRE(q >= 0);
      const std::string junk(mqt::control_size, '\x42');
      BOOST_REQUIRE(::mq_send(q, junk.data(), junk.size(), 0) == 0);
      auto detach_unknown = mqt::encode_control({mqt::control_kind::detach, 77, 1});
      BOOST_REQUIRE(::mq_send(q, detach_unknown.data(), detach_unknown.size(), 0) == 0);
      ::mq_close(q);
    }
    BOOST_TEST(eventually([&] { return pub.counters().peers_refused == 1u; }), transport);
    auto sub = bus.subscribe<Sample>("in/x");
    BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
    pub.publish(ipcbus::test::make_sample(9, 10));
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.index() == 9u);
    BOOST_TEST(pub.counters().peers_refused == 1u, transport);  // one run of garbage, counted once
  }
}

BOOST_AUTO_TEST_CASE(hostile_uris_are_refused) {
  scratch_domain d;
  ipcbus::Bus bus(d.options());
  for (const std::string& uri :
       {std::string("pipe://relative/0123456789abcdef.pipe"), std::string("pipe:///tmp/../etc/0123456789abcdef.pipe"),
        std::string("pipe:///tmp/x/0123456789ABCDEF.pipe"), std::string("pipe:///tmp/x/passwd")})
    BOOST_TEST(!pipet::parse_uri(uri).has_value(), uri);
  const auto good = mqt::make_uri(d.domain_dir(), mqt::queue_name{mqt::queue_prefix(d.domain_dir()).substr(7, 16), 1, 0, 42});
  BOOST_TEST(mqt::parse_uri(good).has_value(), good);
  for (const std::string& uri : {std::string("mq:///dev/mqueue/ipcbus-x"), std::string("mq://") + "/tmp/mq/ipcbus-0123",
                                 mqt::make_uri("/elsewhere", mqt::queue_name{mqt::queue_prefix(d.domain_dir()).substr(7, 16), 1, 0, 42}),
                                 good + "0/../x", good.substr(0, good.size() - 2) + "-s42"})
    BOOST_TEST(!mqt::parse_uri(uri).has_value(), uri);
  BOOST_TEST(!mqt::parse_queue_name("ipcbus-0123456789abcdef-0000000000000001-p0").has_value());
  BOOST_TEST(!mqt::parse_queue_name("ipcbus-0123456789abcdef-0000000000000001-p-1").has_value());
  BOOST_TEST(mqt::parse_queue_name("/ipcbus-0123456789abcdef-0000000000000001-00000000000000ff-s7").has_value());
}

BOOST_AUTO_TEST_CASE(mq_fragment_off_refuses_what_does_not_fit_one_message) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml_for("mq", "mq_fragment: false")));
  auto sub = bus.subscribe<Sample>("blob/x");
  auto pub = bus.advertise<Sample>("blob/x");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  const auto limits = mqt::read_mq_limits();
  std::error_code ec;
  pub.publish(ipcbus::test::make_sample(1, static_cast<std::size_t>(limits.msgsize_max)), ec);
  BOOST_TEST(ec == ipcbus::errc::message_too_large);
  pub.publish(ipcbus::test::make_sample(2, static_cast<std::size_t>(limits.msgsize_max) / 2), ec);
  BOOST_TEST(!ec);
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->message.index() == 2u);
  BOOST_TEST(r->info.sequence == 1u);  // the refused one spent no sequence number
}

// Fills this user's RLIMIT_MSGQUEUE budget with queues of its own (unlinked at
// once: they vanish with their descriptors, whatever happens to the test), then
// gives back `room` bytes or so. Other processes of the same uid that create or
// remove queues meanwhile change what is left: CTest runs every test that makes
// queues under one RESOURCE_LOCK (tests/*/CMakeLists.txt).
class mq_ballast {
 public:
  explicit mq_ballast(long room) {
    fill(10, 8192);
    fill(1, 8192);
    if (small_.size() < 4 && !queues_.empty()) {  // make sure there is something small to give back
      ::mq_close(queues_.back());
      queues_.pop_back();
      fill(1, 8192);
    }
    for (const long size : {1024L, 128L}) {
      fill(10, size);
      fill(1, size);
    }
    // Give back whole 1 x 8 KiB queues first: they are the last big ones made.
    while (room > 0 && !small_.empty()) {
      ::mq_close(small_.back());
      small_.pop_back();
      room -= 8192 + 100;
    }
  }
  ~mq_ballast() {
    for (auto q : queues_) ::mq_close(q);
    for (auto q : small_) ::mq_close(q);
  }
  std::size_t size() const { return queues_.size() + small_.size(); }

 private:
  void fill(long count, long size) {
    while (add(count, size)) {
    }
  }
  bool add(long count, long size) {
    mq_attr attr{};
    attr.mq_maxmsg = count;
    attr.mq_msgsize = size;
    const std::string name = "/ipcbus-test-ballast-" + std::to_string(::getpid()) + "-" + std::to_string(serial_++);
    const mqd_t q = ::mq_open(name.c_str(), O_RDONLY | O_CREAT | O_EXCL, 0600, &attr);
    if (q < 0) return false;
    ::mq_unlink(name.c_str());
    (count == 1 && size == 8192 ? small_ : queues_).push_back(q);
    return queues_.size() + small_.size() < 4096;
  }
  std::vector<mqd_t> queues_, small_;
  int serial_ = 0;
};

BOOST_AUTO_TEST_CASE(a_nearly_used_up_rlimit_msgqueue_gives_smaller_queues_that_still_work) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml_for("mq")));
  // About 24 KiB left: an attach queue (about 1 KiB) fits, a full data queue
  // (10 x 8 KiB) does not; the subscriber's is made smaller, and works.
  mq_ballast ballast(24 * 1024);
  BOOST_TEST_REQUIRE(ballast.size() > 0u);
  auto sub = bus.subscribe<Sample>("tight/x");
  auto pub = bus.advertise<Sample>("tight/x");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  bool checked = false;
  for (const auto& m : markers(d.domain_dir())) {
    if (m.find("-s") == std::string::npos) continue;  // the subscriber's data queue
    const mqd_t q = ::mq_open(("/" + m).c_str(), O_WRONLY | O_NONBLOCK);
    BOOST_REQUIRE(q >= 0);
    mq_attr attr{};
    BOOST_REQUIRE(::mq_getattr(q, &attr) == 0);
    ::mq_close(q);
    BOOST_TEST(attr.mq_maxmsg * attr.mq_msgsize < 10 * 8192);  // smaller than it would be
    checked = true;
  }
  BOOST_TEST(checked);
  for (int i = 1; i <= 200; ++i) {
    pub.publish(ipcbus::test::make_sample(i, 5000));  // several fragments in a queue this small
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.index() == static_cast<std::uint64_t>(i));
    BOOST_TEST(ipcbus::test::sample_intact(r->message));
  }
}

// A depth above msg_max loses nothing (the rest waits in the publisher's
// queue): the default depth says so at info level, a configured one warns.
BOOST_AUTO_TEST_CASE(only_a_configured_depth_above_msg_max_warns) {
  const auto limits = mqt::read_mq_limits();
  const std::string explicit_depth = std::to_string(limits.msg_max + 1);
  scratch_domain d;
  const auto run_publisher = [&](const std::string& yaml) {
    const auto cfg = d.write_config(yaml);
    child_process pub("/bin/sh", {"-c", "exec \"$0\" publish \"$1\" depth/x 1 16 2>&1", peer, cfg.string()});
    BOOST_REQUIRE(pub.wait(30s) == 0);
    return pub.output();
  };
  const std::string with_default = run_publisher(yaml_for("mq"));
  BOOST_TEST(with_default.find("warn: mq: depth") == std::string::npos, with_default);
  const std::string configured = run_publisher(yaml_for("mq", "depth: " + explicit_depth));
  BOOST_TEST(configured.find("warn: mq: depth " + explicit_depth) != std::string::npos, configured);
}
