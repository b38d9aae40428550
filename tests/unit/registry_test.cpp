// Discovery entries, flock liveness and reclaiming, and the transport registry.
#define BOOST_TEST_MODULE registry
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "ipcbus/registry.hpp"
#include "ipcbus/transport.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using ipcbus::test::scratch_domain;

namespace {

ipcbus::Participant publisher_info(const std::string& topic) {
  ipcbus::Participant p;
  p.set_id(ipcbus::random_id());
  p.set_role(ipcbus::ROLE_PUBLISHER);
  p.set_topic(topic);
  p.set_pid(::getpid());
  return p;
}

fs::path make_domain_dir(const scratch_domain& d) {
  std::error_code ec;
  const auto dir = ipcbus::ensure_domain_dir(d.make_config(), ec);
  BOOST_REQUIRE(!ec);
  return dir;
}

}  // namespace

BOOST_AUTO_TEST_CASE(domain_directory_is_created_private) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  BOOST_TEST(fs::is_directory(dir));
  BOOST_TEST(static_cast<int>(fs::status(dir).permissions() & fs::perms::all) == 0700);
}

BOOST_AUTO_TEST_CASE(a_live_entry_is_listed_with_what_it_registered) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  std::error_code ec;
  const auto info = publisher_info("a/b");
  auto reg = ipcbus::registration::create(dir, info, ec);
  BOOST_REQUIRE(!ec);
  const auto all = ipcbus::list_participants(dir);
  BOOST_REQUIRE(all.size() == 1u);
  BOOST_TEST(all[0].alive);
  BOOST_TEST(all[0].info.id() == info.id());
  BOOST_TEST(all[0].info.topic() == "a/b");
  BOOST_TEST(!ipcbus::entry_is_stale(reg->entry_path()));
  BOOST_TEST(ipcbus::entry_is_live(reg->entry_path()));
}

BOOST_AUTO_TEST_CASE(dropping_a_registration_removes_every_file_of_its_id) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  std::error_code ec;
  const auto info = publisher_info("a/b");
  {
    auto reg = ipcbus::registration::create(dir, info, ec);
    std::ofstream(dir / (ipcbus::id_to_hex(info.id()) + ".sock")) << "x";
  }
  BOOST_TEST(fs::is_empty(dir));
}

BOOST_AUTO_TEST_CASE(entry_of_a_dead_process_is_stale_and_reclaimed) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  const auto info = publisher_info("dead/one");
  const pid_t child = ::fork();
  if (child == 0) {  // registers, leaves a file of its own, dies without cleaning up
    std::error_code ec;
    auto* reg = ipcbus::registration::create(dir, info, ec).release();
    (void)reg;
    std::ofstream(dir / (ipcbus::id_to_hex(info.id()) + ".stats")) << "x";
    ::_exit(ec ? 1 : 0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  BOOST_REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  BOOST_TEST(ipcbus::list_participants(dir).empty());
  const auto stale = ipcbus::list_participants(dir, true);
  BOOST_REQUIRE(stale.size() == 1u);
  BOOST_TEST(!stale[0].alive);
  BOOST_TEST(ipcbus::entry_is_stale(stale[0].entry_path));
  BOOST_TEST(!ipcbus::entry_is_live(stale[0].entry_path));
  const auto removed = ipcbus::reclaim_stale(dir);
  BOOST_TEST(removed.size() == 2u);
  BOOST_TEST(fs::is_empty(dir));
  // Gone: nothing to reclaim, and nobody alive either (a listing that read the
  // entry just before a reclaimer removed it must not call it alive).
  BOOST_TEST(!ipcbus::entry_is_stale(stale[0].entry_path));
  BOOST_TEST(!ipcbus::entry_is_live(stale[0].entry_path));
}

BOOST_AUTO_TEST_CASE(reclaim_leaves_live_entries_alone) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  std::error_code ec;
  auto reg = ipcbus::registration::create(dir, publisher_info("live/one"), ec);
  BOOST_TEST(ipcbus::reclaim_stale(dir).empty());
  BOOST_TEST(ipcbus::list_participants(dir).size() == 1u);
}

BOOST_AUTO_TEST_CASE(corrupt_entries_are_skipped_not_fatal) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  std::ofstream(dir / "0123456789abcdef.pub") << "\xff\xff\xff not a protobuf";
  BOOST_TEST(ipcbus::list_participants(dir, true).empty());
}

BOOST_AUTO_TEST_CASE(ids_are_random_nonzero_and_print_as_16_hex_digits) {
  const auto a = ipcbus::random_id();
  const auto b = ipcbus::random_id();
  BOOST_TEST(a != 0u);
  BOOST_TEST(a != b);
  BOOST_TEST(ipcbus::id_to_hex(0xabcull) == "0000000000000abc");
}

BOOST_AUTO_TEST_CASE(transports_are_found_by_uri_scheme) {
  BOOST_TEST(ipcbus::uri_scheme("unix:///run/x.sock") == "unix");
  BOOST_TEST(ipcbus::uri_scheme("tcp://127.0.0.1:1") == "tcp");
  BOOST_TEST(ipcbus::uri_scheme("no-scheme").empty());
  ipcbus::transport_registry reg;
  BOOST_TEST(reg.find("unix") == nullptr);
  BOOST_TEST(reg.schemes().empty());
}

BOOST_AUTO_TEST_CASE(update_replaces_the_entry_and_keeps_it_locked) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  auto info = publisher_info("a/b");
  std::error_code ec;
  auto reg = ipcbus::registration::create(dir, info, ec);
  BOOST_REQUIRE(!ec);
  auto listed = ipcbus::list_participants(dir);
  BOOST_REQUIRE(listed.size() == 1u);
  BOOST_TEST(listed[0].info.endpoint().empty());  // not listening yet: subscribers skip it
  info.set_endpoint("unix:///somewhere");
  reg->update(info, ec);
  BOOST_REQUIRE(!ec);
  listed = ipcbus::list_participants(dir);
  BOOST_REQUIRE(listed.size() == 1u);
  BOOST_TEST(listed[0].info.endpoint() == "unix:///somewhere");
  BOOST_TEST(listed[0].alive);
  BOOST_TEST(!ipcbus::entry_is_stale(reg->entry_path()));
  BOOST_TEST(ipcbus::reclaim_stale(dir).empty());
}

// A participant's temporary is unlocked for an instant between its open and its
// flock; a reclaim running just then must not take it for a dead one's.
BOOST_AUTO_TEST_CASE(a_young_unlocked_temporary_is_left_alone_an_old_one_reclaimed) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  const fs::path tmp = dir / (".0123456789abcdef." + std::to_string(::getpid()) + ".tmp");  // its writer lives
  std::ofstream(tmp) << "partial";
  ipcbus::reclaim_stale(dir);
  BOOST_TEST(fs::exists(tmp));
  fs::last_write_time(tmp, fs::file_time_type::clock::now() - std::chrono::minutes(5));
  const auto removed = ipcbus::reclaim_stale(dir);
  BOOST_TEST(!fs::exists(tmp));
  BOOST_TEST(removed.size() == 1u);
}

BOOST_AUTO_TEST_CASE(the_temporary_of_a_process_that_is_gone_is_reclaimed_at_once) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  const fs::path tmp = dir / ".0123456789abcdef.2147483646.tmp";  // far above any pid_max in use
  std::ofstream(tmp) << "partial";
  ipcbus::reclaim_stale(dir);
  BOOST_TEST(!fs::exists(tmp));
  BOOST_TEST(ipcbus::process_gone(2147483646u));
  BOOST_TEST(!ipcbus::process_gone(static_cast<std::uint32_t>(::getpid())));
}

// Creating the domain directory goes through ".<domain>.<pid>.tmp" beside it
// (access.cpp, make_directory): a process killed in between leaves it there.
BOOST_AUTO_TEST_CASE(the_domain_directory_temporary_of_a_process_that_is_gone_is_reclaimed) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  const std::string base = "." + dir.filename().string() + ".";
  const fs::path dead = dir.parent_path() / (base + "2147483646.tmp");  // far above any pid_max in use
  const fs::path live = dir.parent_path() / (base + std::to_string(::getpid()) + ".tmp");
  const fs::path in_use = dir.parent_path() / (base + "2147483645.tmp");  // not empty: not ours to judge
  const fs::path other = dir.parent_path() / ".another-domain.2147483646.tmp";
  for (const auto& p : {dead, live, in_use, other}) fs::create_directory(p);
  std::ofstream(in_use / "file") << "x";
  const auto removed = ipcbus::reclaim_stale(dir);
  BOOST_TEST(!fs::exists(dead));
  BOOST_TEST((std::find(removed.begin(), removed.end(), dead) != removed.end()));
  BOOST_TEST(fs::exists(live));
  BOOST_TEST(fs::exists(in_use));
  BOOST_TEST(fs::exists(other));
  for (const auto& p : {live, in_use, other}) fs::remove_all(p);
}

// A reclaim tests a registering participant's temporary for staleness with a
// brief shared lock; registering must wait that instant out, not fail with
// EWOULDBLOCK (once seen as "advertise: Resource temporarily unavailable").
BOOST_AUTO_TEST_CASE(registering_while_another_process_reclaims_never_fails) {
  scratch_domain d;
  const auto dir = make_domain_dir(d);
  std::atomic<bool> stop{false};
  std::thread reclaimer([&] {
    while (!stop) ipcbus::reclaim_stale(dir);
  });
  int failures = 0;
  std::string first_error;
  for (int i = 0; i < 3000; ++i) {
    std::error_code ec;
    auto reg = ipcbus::registration::create(dir, publisher_info("race/" + std::to_string(i)), ec);
    if (ec || !reg) {
      if (failures++ == 0) first_error = ec.message();
    }
  }
  stop = true;
  reclaimer.join();
  BOOST_TEST(failures == 0, failures << " of 3000 registrations failed, first: " << first_error);
}
