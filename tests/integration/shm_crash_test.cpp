// Crash safety of the shm:// transport under churn: publishers and subscribers,
// each a real process, are SIGKILLed at random moments (some of them inside the
// publish of a message large enough for a side segment) and replaced, hundreds
// of times, on topics of every QoS. Afterwards nothing may be wedged, no message
// that was delivered may be damaged, and nothing may be left behind.
//
// The schedule (who is killed, when) comes from a seed that is printed; set
// IPCBUS_CRASH_SEED to replay a schedule. Process timing still varies between
// runs, so a replay reproduces the schedule, not every interleaving.
#define BOOST_TEST_MODULE shm_crash
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <thread>

#include "ipcbus/registry.hpp"
#include "ipcbus/transports/shm.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using ipcbus::test::child_process;
using ipcbus::test::eventually;
using ipcbus::test::peer_status;
using ipcbus::test::Sample;
using ipcbus::test::scratch_domain;
using ipcbus::test::status_page;
namespace fs = std::filesystem;

const std::string peer = ipcbus::test::built_program("ipcbus_test_peer");

// Rings of 1 MiB (2 MiB with history); a large body takes more than a quarter
// of either, so every large message travels in a side segment of its own.
const std::string yaml =
    "defaults: { transport: shm, qos: reliable, depth: 16, publish_timeout_ms: 1000 }\n"
    "topics:\n"
    "  - { match: \"crash/reliable\", qos: reliable }\n"
    "  - { match: \"crash/oldest\", qos: drop_oldest }\n"
    "  - { match: \"crash/history\", qos: reliable, history: 8 }\n";
const std::vector<std::string> topics = {"crash/reliable", "crash/oldest", "crash/history"};
constexpr std::size_t small_body = 200;
constexpr std::size_t large_body = 600 << 10;
constexpr int large_every = 16;
constexpr int interval_us = 2000;
constexpr int kills = 300;

std::uint64_t seed_from_environment() {
  if (const char* s = std::getenv("IPCBUS_CRASH_SEED")) return std::stoull(s);
  return 20240611;  // fixed, so that CI runs the same schedule every time
}

// One member of the cast: a role on a topic, played by one process after another.
struct participant {
  bool publisher = false;
  std::string topic;  // topic or pattern
  std::unique_ptr<child_process> process;
  std::shared_ptr<status_page> status;  // of the current process

  std::string describe() const {
    return std::string(publisher ? "publisher on " : "subscriber to ") + topic + " (pid " +
           std::to_string(process ? process->pid() : 0) + ")";
  }
};

class cast {
 public:
  cast(const scratch_domain& d, fs::path config) : domain_(d), config_(std::move(config)) {}

  participant& add(bool publisher, const std::string& topic) {
    members_.push_back(participant{publisher, topic, nullptr, nullptr});
    start(members_.back());
    return members_.back();
  }

  // Starts a new process for `p`, with a status page of its own (pages of
  // earlier processes are kept for the final tally).
  void start(participant& p) {
    const fs::path file = domain_.runtime_dir() / ("status-" + std::to_string(pages_.size()));
    p.status = std::make_shared<status_page>(file);
    pages_.push_back(p.status);
    const std::string cfg = config_.string();
    std::vector<std::string> args =
        p.publisher ? std::vector<std::string>{"stream", cfg, p.topic, file.string(), std::to_string(small_body),
                                               std::to_string(large_body), std::to_string(large_every),
                                               std::to_string(interval_us)}
                    : std::vector<std::string>{"verify", cfg, p.topic, file.string()};
    p.process = std::make_unique<child_process>(peer, args);
  }

  std::vector<participant>& members() { return members_; }
  const std::vector<std::shared_ptr<status_page>>& pages() const { return pages_; }

 private:
  const scratch_domain& domain_;
  fs::path config_;
  std::vector<participant> members_;
  std::vector<std::shared_ptr<status_page>> pages_;
};

// Waits (bounded) until the publisher is inside the publish call of a large
// message; true if it was seen there.
bool catch_in_large_publish(const participant& p) {
  const auto deadline = std::chrono::steady_clock::now() + 1s;
  while (std::chrono::steady_clock::now() < deadline) {
    if ((*p.status)->phase.load() == peer_status::publishing_large) return true;
    std::this_thread::sleep_for(50us);
  }
  return false;
}

std::vector<std::string> shm_objects_starting_with(const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/dev/shm")) {
    std::string name(1, '/');  // as above
    name += e.path().filename().string();
    if (name.starts_with(prefix)) out.push_back(name);
  }
  return out;
}

std::string files_in(const fs::path& dir) {
  std::string out;
  for (const auto& e : fs::directory_iterator(dir)) {
    out += ' ';  // not `" " + ...`: a false -Wrestrict of GCC 12 at -O3
    out += e.path().filename().string();
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(random_kills_of_publishers_and_subscribers_wedge_nothing_damage_nothing_leak_nothing) {
  const std::uint64_t seed = seed_from_environment();
  BOOST_TEST_MESSAGE("shm crash loop: seed " << seed << " (set IPCBUS_CRASH_SEED=" << seed << " to replay)");
  std::mt19937_64 rng(seed);
  scratch_domain d;
  const fs::path dir = d.domain_dir();
  const std::string prefix = ipcbus::transport::shm::segment_prefix(dir);
  cast people(d, d.write_config(yaml));
  // Two publishers on the reliable topic, one on each other; a subscriber per
  // topic and one to all of them (it attaches to every ring, of every QoS).
  people.add(true, "crash/reliable");
  people.add(true, "crash/reliable");
  people.add(true, "crash/oldest");
  people.add(true, "crash/history");
  for (const auto& t : topics) people.add(false, t);
  people.add(false, "crash/#");
  auto& members = people.members();

  // ---- the loop: kill someone, start a replacement at once ------------------
  int publisher_kills = 0, subscriber_kills = 0, kills_in_large_publish = 0, kills_while_starting = 0;
  for (int k = 0; k < kills; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 150));
    for (auto& p : members) {
      // Nobody ends by itself: that would be a crash, or an error it gave up on.
      // (Seen: "advertise ...: No such file or directory" when another process's
      // reclaim_stale removed this one's hidden registry temporary in the instant
      // between its creation and its flock, bus/src/registry.cpp.)
      if (!p.process->running()) {
        BOOST_ERROR(p.describe() << " ended by itself, status " << p.process->wait(0ms) << ", output: "
                                 << p.process->output());
        people.start(p);
      }
    }
    auto& victim = members[rng() % members.size()];
    const int how = static_cast<int>(rng() % 8);
    if (victim.publisher && how < 4) {
      if (catch_in_large_publish(victim)) ++kills_in_large_publish;
    }
    victim.process->signal(SIGKILL);
    BOOST_REQUIRE_MESSAGE(victim.process->wait(10s) != -1, victim.describe() << " survived SIGKILL for 10 s");
    ++(victim.publisher ? publisher_kills : subscriber_kills);
    people.start(victim);
    if (how == 7) {
      // Sometimes the replacement dies young: while it creates its ring or
      // attaches to others (each kill here counts as one of the `kills`).
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40000));
      victim.process->signal(SIGKILL);
      BOOST_REQUIRE(victim.process->wait(10s) != -1);
      ++(victim.publisher ? publisher_kills : subscriber_kills);
      ++kills_while_starting;
      ++k;
      people.start(victim);
    }
  }
  BOOST_TEST_MESSAGE("killed " << publisher_kills << " publishers (" << kills_in_large_publish
                               << " inside the publish of a large message) and " << subscriber_kills
                               << " subscribers; " << kills_while_starting << " kills of processes just started");
  BOOST_TEST(publisher_kills + subscriber_kills >= kills);
  BOOST_TEST(publisher_kills > 0);
  BOOST_TEST(subscriber_kills > 0);
  BOOST_TEST(kills_in_large_publish > 0);  // the side-segment path was really hit

  // ---- nobody is wedged: every process still makes progress ------------------
  for (auto& p : members) {
    BOOST_TEST_CONTEXT(p.describe()) {
      BOOST_TEST(p.process->running());
      const auto& s = *p.status;
      const std::uint64_t before = p.publisher ? s->published.load() : s->received.load();
      BOOST_TEST(eventually([&] { return (p.publisher ? s->published.load() : s->received.load()) > before; }, 30s),
                 "no progress within 30 s");
    }
  }

  // ---- a new publisher and subscriber on each topic work at once -------------
  {
    ipcbus::Bus bus(d.options(yaml));
    for (const auto& topic : topics) {
      BOOST_TEST_CONTEXT("new pair on " << topic) {
        auto pub = bus.advertise<Sample>(topic);
        std::atomic<std::uint64_t> got{0}, damaged{0}, last{0}, disordered{0};
        auto sub = bus.subscribe<Sample>(topic, [&, id = pub.id()](const Sample& s, const ipcbus::MessageInfo& info) {
          if (info.publisher_id != id) return;  // the cast's publishers are on this topic too
          if (!ipcbus::test::sample_matches_index(s)) ++damaged;
          if (s.index() <= last) ++disordered;
          last = s.index();
          ++got;
        });
        std::uint64_t i = 0;
        BOOST_TEST(eventually([&] {
          ++i;
          std::error_code ec;
          pub.publish(ipcbus::test::make_sample(i, i % 4 == 0 ? large_body : small_body), ec);
          return got.load() >= 20;
        }, 60s));
        BOOST_TEST(damaged.load() == 0u);
        BOOST_TEST(disordered.load() == 0u);
      }
    }
  }

  // ---- everyone stops cleanly when asked --------------------------------------
  for (auto& p : members) p.process->signal(SIGTERM);
  for (auto& p : members) {
    const int status = p.process->wait(30s);
    BOOST_TEST_CONTEXT(p.describe()) {
      BOOST_REQUIRE_MESSAGE(status != -1, "still running 30 s after SIGTERM");
      BOOST_TEST(WIFEXITED(status));
      BOOST_TEST(WEXITSTATUS(status) == 0, p.process->output());
    }
  }

  // ---- every message any subscriber got was intact and in order ---------------
  std::uint64_t published = 0, publish_errors = 0, received = 0, large = 0, corrupt = 0, disorder = 0, lost = 0,
                bad_frames = 0;
  for (const auto& page : people.pages()) {
    const auto& s = *page;
    published += s->published;
    publish_errors += s->publish_errors;
    received += s->received;
    large += s->large_received;
    corrupt += s->corrupt;
    disorder += s->out_of_order;
    lost += s->lost;
    bad_frames += s->bad_frames;
  }
  BOOST_TEST_MESSAGE(people.pages().size() << " processes in all: published " << published << " (" << publish_errors
                                           << " publish errors), received " << received << " (" << large
                                           << " large), lost " << lost << ", bad frames " << bad_frames);
  BOOST_TEST(corrupt == 0u);
  BOOST_TEST(disorder == 0u);
  BOOST_TEST(bad_frames == 0u);  // a killed publisher is a loss (gaps), never a malformed link
  BOOST_TEST(received > 0u);
  BOOST_TEST(large > 0u);

  // ---- and nothing is left once the dead are reclaimed ------------------------
  // The library's reclaim of this domain, rather than `ipcbus gc`, whose sweep of
  // every domain would reach into tests running alongside this one.
  BOOST_TEST_MESSAGE("left by the killed: " << shm_objects_starting_with(prefix).size() << " shm objects,"
                                            << files_in(dir));
  ipcbus::reclaim_stale(dir);
  ipcbus::transport::shm::reclaim_shm_segments(dir);
  const auto segments = shm_objects_starting_with(prefix);
  BOOST_TEST(segments.empty(), segments.size() << " segments left, e.g. " << (segments.empty() ? "" : segments[0]));
  BOOST_TEST(ipcbus::list_participants(dir, true).empty());
  // A participant creates its flocked entry before any other <id>.* file, so
  // even one killed while it was starting up leaves nothing reclaim misses.
  std::string orphans, others;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const std::string id = name.substr(0, name.find('.'));
    const bool no_entry = !fs::exists(dir / (id + ".pub")) && !fs::exists(dir / (id + ".sub"));
    ((no_entry && id.size() == 16 && (name.ends_with(".stats") || name.ends_with(".shm"))) ? orphans : others) +=
        " " + name;
  }
  BOOST_TEST(others.empty(), "left in the domain directory:" << others);
  BOOST_TEST(orphans.empty(), "left by participants killed before they registered:" << orphans);
}
