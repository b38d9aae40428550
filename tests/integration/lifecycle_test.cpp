// Signals and a service's life, with real processes: SIGHUP reloads the
// configuration (a broken file leaves the old one in force), SIGTERM drains
// queued reliable messages to a live subscriber within the configured
// deadline, and a stopped subscriber cannot keep a process past it.
#define BOOST_TEST_MODULE lifecycle
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <optional>

#include "ipcbus/registry.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using ipcbus::test::built_program;
using ipcbus::test::child_process;
using ipcbus::test::eventually;
using ipcbus::test::scratch_domain;
namespace fs = std::filesystem;

int exit_code_of(int status) { return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

// Replaces `file` in one step (write aside, rename), as an editor or a
// deployment tool would: the peer never reads half a file.
void rewrite_config(const scratch_domain& d, const fs::path& file, const std::string& yaml) {
  const fs::path tmp = file.string() + ".new";
  {
    std::ofstream out(tmp);
    out << "domain: " << d.domain() << "\nruntime_dir: " << d.runtime_dir().string() << "\n" << yaml;
  }
  fs::rename(tmp, file);
}

// The registry entry of the live publisher on `topic`, once it names its endpoint.
std::optional<ipcbus::Participant> publisher_on(const scratch_domain& d, const std::string& topic) {
  std::optional<ipcbus::Participant> found;
  eventually([&] {
    for (auto& r : ipcbus::list_participants(d.domain_dir()))
      if (r.info.topic() == topic && !r.info.endpoint().empty()) {
        found = r.info;
        return true;
      }
    return false;
  });
  return found;
}

bool output_contains(const child_process& p, const std::string& text) { return p.output().find(text) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_CASE(sighup_applies_a_rewritten_config_to_publishers_created_afterwards) {
  scratch_domain d;
  const fs::path cfg = d.write_config("defaults: { transport: unix, qos: reliable }\n");
  child_process peer(built_program("ipcbus_test_peer"), {"reload", cfg.string(), "svc"});
  const auto first = publisher_on(d, "svc/0");
  BOOST_REQUIRE(first.has_value());
  BOOST_TEST(first->transport() == "unix");
  BOOST_TEST(first->qos() == ipcbus::QOS_RELIABLE);

  rewrite_config(d, cfg, "defaults: { transport: tcp, qos: drop_oldest, depth: 7 }\n");
  peer.signal(SIGHUP);
  const auto second = publisher_on(d, "svc/1");
  BOOST_REQUIRE_MESSAGE(second.has_value(), "no publisher after the reload; peer said: " << peer.output());
  BOOST_TEST(second->transport() == "tcp");
  BOOST_TEST(second->endpoint().starts_with("tcp://"));
  BOOST_TEST(second->qos() == ipcbus::QOS_DROP_OLDEST);
  BOOST_TEST(second->depth() == 7u);
  // The publisher made before the reload keeps what it was created with.
  const auto unchanged = publisher_on(d, "svc/0");
  BOOST_REQUIRE(unchanged.has_value());
  BOOST_TEST(unchanged->transport() == "unix");
  BOOST_TEST(unchanged->qos() == ipcbus::QOS_RELIABLE);

  peer.signal(SIGTERM);
  BOOST_TEST(exit_code_of(peer.wait(20s)) == 0);
  BOOST_TEST(output_contains(peer, "reload 1 ok"), peer.output());
}

BOOST_AUTO_TEST_CASE(sighup_with_a_broken_config_keeps_the_old_one_and_says_where_it_is_broken) {
  scratch_domain d;
  const fs::path cfg = d.write_config("defaults: { transport: tcp, qos: drop_newest }\n");
  child_process peer(built_program("ipcbus_test_peer"), {"reload", cfg.string(), "svc"});
  BOOST_REQUIRE(publisher_on(d, "svc/0").has_value());

  // Line 3 (after domain and runtime_dir), key defaults.transport.
  rewrite_config(d, cfg, "defaults: { transport: carrier_pigeon }\n");
  peer.signal(SIGHUP);
  const auto after = publisher_on(d, "svc/1");
  BOOST_REQUIRE_MESSAGE(after.has_value(), "no publisher after the failed reload; peer said: " << peer.output());
  BOOST_TEST(after->transport() == "tcp");
  BOOST_TEST(after->qos() == ipcbus::QOS_DROP_NEWEST);
  BOOST_TEST(peer.running());  // a bad file never takes the process down

  // Fixed again, the next SIGHUP applies it.
  rewrite_config(d, cfg, "defaults: { transport: unix, qos: reliable }\n");
  peer.signal(SIGHUP);
  const auto fixed = publisher_on(d, "svc/2");
  BOOST_REQUIRE(fixed.has_value());
  BOOST_TEST(fixed->transport() == "unix");

  peer.signal(SIGTERM);
  BOOST_TEST(exit_code_of(peer.wait(20s)) == 0);
  const std::string out = peer.output();
  BOOST_TEST(output_contains(peer, "reload 1 failed: " + cfg.string() + ":3: defaults.transport: expected one of"), out);
  BOOST_TEST(output_contains(peer, "reload 2 ok"), out);
}

// Frames still queued for a live subscriber when SIGTERM comes are delivered
// before the process exits: the subscriber reads slowly, with a small queue of
// its own, so most of the burst is still in the publisher when it is told to stop.
BOOST_AUTO_TEST_CASE(sigterm_delivers_queued_reliable_messages_to_a_live_subscriber_then_exits_0) {
  scratch_domain d;
  const auto cfg = d.write_config(
      "shutdown: { drain_ms: 30000 }\n"
      "topics:\n"
      "  - { match: \"drain/data\", transport: unix, qos: reliable, depth: 100000, publish_timeout_ms: 30000 }\n"
      "  - { match: \"drain/#\", depth: 4 }\n").string();
  const std::string count = "1500";
  child_process sub(built_program("ipcbus_test_peer"), {"subscribe", cfg, "drain/#", count, "60000", "1000"});
  child_process pub(built_program("ipcbus_test_peer"), {"burst", cfg, "drain/data", count, "2000"});
  BOOST_REQUIRE_MESSAGE(eventually([&] { return output_contains(pub, "published " + count); }, 30s),
                        "the burst was not published: " << pub.output());
  BOOST_TEST(sub.running());  // still reading: the rest is in flight
  pub.signal(SIGTERM);
  BOOST_TEST(exit_code_of(pub.wait(40s)) == 0, pub.output());
  BOOST_TEST(exit_code_of(sub.wait(40s)) == 0, sub.output());
  BOOST_TEST(output_contains(sub, "received " + count + " lost 0 corrupt 0 out_of_order 0"), sub.output());
  BOOST_TEST(output_contains(pub, "stopped by signal " + std::to_string(SIGTERM)), pub.output());
}

// A stopped subscriber reads nothing: the drain gives up at the configured
// deadline (3 s, longer than the built-in 2 s, so the wait shows the setting
// is used) and the process still exits 0, its files removed.
BOOST_AUTO_TEST_CASE(a_stopped_subscriber_holds_sigterm_up_only_until_the_drain_deadline) {
  scratch_domain d;
  const auto cfg = d.write_config(
      "shutdown: { drain_ms: 3000 }\n"
      "topics:\n"
      "  - { match: \"stuck/data\", transport: unix, qos: reliable, depth: 100000, publish_timeout_ms: 30000 }\n"
      "  - { match: \"stuck/#\", depth: 4 }\n").string();
  child_process sub(built_program("ipcbus_test_peer"), {"subscribe", cfg, "stuck/#", "1000", "60000"});
  BOOST_REQUIRE(eventually([&] { return output_contains(sub, "ready"); }));
  child_process pub(built_program("ipcbus_test_peer"), {"burst", cfg, "stuck/data", "1000", "4000", "300"});
  // Stopped once connected, during the publisher's pause: the whole burst queues for it.
  BOOST_REQUIRE(eventually([&] { return output_contains(pub, "connected"); }, 30s));
  sub.signal(SIGSTOP);
  BOOST_REQUIRE_MESSAGE(eventually([&] { return output_contains(pub, "published 1000"); }, 30s),
                        "the burst was not published: " << pub.output());
  const auto start = std::chrono::steady_clock::now();
  pub.signal(SIGTERM);
  const int status = pub.wait(20s);
  const auto took = std::chrono::steady_clock::now() - start;
  sub.signal(SIGCONT);
  BOOST_TEST(exit_code_of(status) == 0, pub.output());
  BOOST_TEST(took >= 2500ms, "exited after " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                                             << " ms: it did not wait for the configured drain");
  BOOST_TEST(took < 15s);
  for (const auto& r : ipcbus::list_participants(d.domain_dir(), /*include_stale=*/true))
    BOOST_TEST(r.info.pid() != pub.pid(), "the stopped publisher left its entry " << r.entry_path);
}
