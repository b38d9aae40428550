// The `ipcbus` tool against real peers in other processes.
//
// The peers publish ipcbus.test.Sample, a type the tool is never compiled with:
// everything the tool shows about it comes from the registry's descriptors.
#define BOOST_TEST_MODULE cli
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <regex>
#include <sstream>
#include <thread>

#include "ipcbus/registry.hpp"
#ifdef IPCBUS_HAVE_SHM
#include "ipcbus/transports/shm.hpp"
#endif
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using ipcbus::test::built_program;
using ipcbus::test::child_process;
using ipcbus::test::eventually;
using ipcbus::test::scratch_domain;

struct cli_result {
  int exit_code = -1;  // -1: did not exit normally in time
  std::string output;
};

int exit_code_of(int status) { return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

// Runs `ipcbus ARGS...` to completion. With `with_stderr`, stderr is captured
// too (through sh, since child_process captures stdout only).
cli_result run_cli(const std::vector<std::string>& args, bool with_stderr = true,
                   std::chrono::milliseconds timeout = 30s) {
  std::vector<std::string> argv;
  std::string program = built_program("ipcbus");
  if (with_stderr) {
    argv = {"-c", "exec \"$0\" \"$@\" 2>&1", program};
    program = "/bin/sh";
  }
  argv.insert(argv.end(), args.begin(), args.end());
  child_process p(program, argv);
  cli_result r;
  r.exit_code = exit_code_of(p.wait(timeout));
  r.output = p.output();
  return r;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

// A `serve` peer publishing one Sample every 10 ms on `topic`, registered when this returns.
std::unique_ptr<child_process> start_server(const scratch_domain& d, const std::string& config,
                                            const std::string& topic) {
  auto p = std::make_unique<child_process>(built_program("ipcbus_test_peer"),
                                           std::vector<std::string>{"serve", config, topic});
  // Ready once its entry names the endpoint it listens on (the entry exists,
  // without one, from the moment the publisher starts to set up).
  const bool registered = eventually([&] {
    for (const auto& r : ipcbus::list_participants(d.domain_dir()))
      if (r.info.topic() == topic && r.info.pid() == p->pid() && !r.info.endpoint().empty()) return true;
    return false;
  });
  BOOST_REQUIRE_MESSAGE(registered, "serve peer on " << topic << " never registered");
  return p;
}

// The first `"key":<digits>` of a JSON line.
std::uint64_t json_number(const std::string& line, const std::string& key) {
  std::smatch m;
  const std::regex re("\"" + key + "\":\"?([0-9]+)");
  BOOST_REQUIRE_MESSAGE(std::regex_search(line, m, re), "no " << key << " in " << line);
  return std::stoull(m[1].str());
}

}  // namespace

BOOST_AUTO_TEST_CASE(list_shows_a_live_publisher_with_its_type_and_pid) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  auto server = start_server(d, cfg, "sensors/temp");
  const auto table = run_cli({"--config", cfg, "list"});
  BOOST_TEST(table.exit_code == 0);
  BOOST_TEST(table.output.find("sensors/temp") != std::string::npos, table.output);
  BOOST_TEST(table.output.find("ipcbus.test.Sample") != std::string::npos, table.output);
  BOOST_TEST(table.output.find(std::to_string(server->pid())) != std::string::npos, table.output);
  const auto json = run_cli({"--config", cfg, "list", "--json"}, false);
  BOOST_TEST(json.exit_code == 0);
  const auto lines = lines_of(json.output);
  BOOST_REQUIRE_EQUAL(lines.size(), 1u);
  BOOST_TEST(lines[0].find("\"type\":\"ipcbus.test.Sample\"") != std::string::npos, lines[0]);
  BOOST_TEST(lines[0].find("\"pid\":" + std::to_string(server->pid())) != std::string::npos, lines[0]);
  BOOST_TEST(lines[0].find("\"role\":\"publisher\"") != std::string::npos, lines[0]);
}

BOOST_AUTO_TEST_CASE(echo_decodes_messages_of_a_type_it_was_never_compiled_with) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  auto server = start_server(d, cfg, "demo/samples");
  const auto text = run_cli({"--config", cfg, "echo", "demo/#", "--count", "3", "--timeout", "20"}, false);
  BOOST_TEST(text.exit_code == 0);
  const auto text_lines = lines_of(text.output);
  BOOST_REQUIRE_EQUAL(text_lines.size(), 3u);
  BOOST_TEST(std::regex_search(text_lines[0], std::regex("^demo/samples #[0-9]+ \\{.*\"index\":\"[0-9]+\"")),
             text_lines[0]);
  const auto json = run_cli({"--config", cfg, "echo", "demo/*", "-n", "2", "--json", "--timeout", "20"}, false);
  BOOST_TEST(json.exit_code == 0);
  const auto json_lines = lines_of(json.output);
  BOOST_REQUIRE_EQUAL(json_lines.size(), 2u);
  for (const auto& line : json_lines) {
    BOOST_TEST(line.find("\"topic\":\"demo/samples\"") != std::string::npos, line);
    BOOST_TEST(line.find("\"message\":{\"index\":") != std::string::npos, line);
    // The sequence number and the Sample's index are both counted from 1 by the peer.
    BOOST_TEST(json_number(line, "sequence") == json_number(line, "index"), line);
  }
}

BOOST_AUTO_TEST_CASE(echo_prints_raw_bytes_topics_as_hex_and_base64) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  ipcbus::Bus bus(d.options());
  auto pub = bus.advertise<ipcbus::Bytes>("raw/blob");
  child_process text(built_program("ipcbus"), {"--config", cfg, "echo", "raw/blob", "-n", "1", "-t", "20"});
  child_process json(built_program("ipcbus"), {"--config", cfg, "echo", "raw/#", "-n", "1", "-t", "20", "--json"});
  // Keep publishing until both have seen one: they attach whenever discovery finds us.
  BOOST_TEST(eventually([&] {
    pub.publish(ipcbus::Bytes(std::string("\x01\x02hello", 7)));
    std::this_thread::sleep_for(20ms);
    return !text.running() && !json.running();
  }, 20s));
  BOOST_TEST(exit_code_of(text.wait(1s)) == 0);
  BOOST_TEST(exit_code_of(json.wait(1s)) == 0);
  BOOST_TEST(text.output().find("bytes[7] 01 02 68 65 6c 6c 6f") != std::string::npos, text.output());
  BOOST_TEST(json.output().find("\"bytes\":\"AQJoZWxsbw==\"") != std::string::npos, json.output());
}

BOOST_AUTO_TEST_CASE(echo_without_traffic_exits_1_when_the_timeout_passes) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  const auto r = run_cli({"--config", cfg, "echo", "quiet/topic", "--timeout", "0.5"});
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(r.output.find("ipcbus: no message on 'quiet/topic'") != std::string::npos, r.output);
}

BOOST_AUTO_TEST_CASE(echo_stops_cleanly_on_sigint) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  child_process echo(built_program("ipcbus"), {"--config", cfg, "echo", "any/#"});
  BOOST_REQUIRE(eventually([&] { return !ipcbus::list_participants(d.domain_dir()).empty(); }));
  echo.signal(SIGINT);
  BOOST_TEST(exit_code_of(echo.wait(10s)) == 0);
  // It unregistered on the way out: nothing is left for gc.
  BOOST_TEST(ipcbus::list_participants(d.domain_dir(), true).empty());
}

BOOST_AUTO_TEST_CASE(pub_with_json_delivers_to_a_live_subscriber_peer) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  // The type is known to the bus through this publisher's entry (subscribers
  // register only the type's name, not its descriptors).
  auto server = start_server(d, cfg, "demo/source");
  child_process sub(built_program("ipcbus_test_peer"), {"subscribe", cfg, "demo/sink", "1", "20000"});
  BOOST_REQUIRE(eventually([&] {
    for (const auto& r : ipcbus::list_participants(d.domain_dir()))
      if (r.info.pid() == sub.pid()) return true;
    return false;
  }));
  // An empty body's checksum is the FNV-1a offset basis, so the peer sees an intact Sample.
  const auto r = run_cli({"--config", cfg, "pub", "demo/sink", "--type", "ipcbus.test.Sample", "--json",
                          R"({"index": 1, "checksum": 2166136261, "text": "from the cli"})"});
  BOOST_TEST(r.exit_code == 0, r.output);
  BOOST_TEST(exit_code_of(sub.wait(20s)) == 0);
  BOOST_TEST(sub.output().find("received 1 lost 0 corrupt 0") != std::string::npos, sub.output());
}

BOOST_AUTO_TEST_CASE(pub_of_a_type_nobody_registered_exits_1_and_says_so) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  const auto r = run_cli({"--config", cfg, "pub", "demo/x", "--type", "ipcbus.test.Sample", "--json", "{}"});
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(r.output.find("ipcbus: type 'ipcbus.test.Sample' is not known to the bus") != std::string::npos,
             r.output);
}

BOOST_AUTO_TEST_CASE(malformed_json_exits_2_with_a_clear_message) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  auto server = start_server(d, cfg, "demo/source");
  const auto broken = run_cli({"--config", cfg, "pub", "demo/x", "--type", "ipcbus.test.Sample", "--json", "{\"index\": "});
  BOOST_TEST(broken.exit_code == 2);
  BOOST_TEST(broken.output.find("ipcbus: --json is not a valid ipcbus.test.Sample") != std::string::npos,
             broken.output);
  const auto unknown = run_cli({"--config", cfg, "pub", "demo/x", "--type", "ipcbus.test.Sample", "--json",
                                R"({"no_such_field": 1})"});
  BOOST_TEST(unknown.exit_code == 2);
  BOOST_TEST(unknown.output.find("no_such_field") != std::string::npos, unknown.output);
}

BOOST_AUTO_TEST_CASE(stats_shows_a_publishers_message_count_rising) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  auto server = start_server(d, cfg, "demo/rate");
  const auto first = run_cli({"--config", cfg, "stats", "--json", "--interval", "0.3"}, false);
  const auto second = run_cli({"--config", cfg, "stats", "--json", "--interval", "0.3"}, false);
  BOOST_TEST(first.exit_code == 0);
  BOOST_TEST(second.exit_code == 0);
  BOOST_REQUIRE_EQUAL(lines_of(first.output).size(), 1u);
  BOOST_REQUIRE_EQUAL(lines_of(second.output).size(), 1u);
  const auto line = lines_of(second.output)[0];
  BOOST_TEST(line.find("\"topic\":\"demo/rate\"") != std::string::npos, line);
  BOOST_TEST(json_number(line, "messages") > json_number(lines_of(first.output)[0], "messages"));
  BOOST_TEST(json_number(line, "messages_per_s") > 0u, line);  // ~100/s from the peer
  const auto table = run_cli({"--config", cfg, "stats", "-i", "0.1"}, false);
  BOOST_TEST(table.exit_code == 0);
  BOOST_TEST(table.output.find("MSG/S") != std::string::npos, table.output);
}

BOOST_AUTO_TEST_CASE(gc_removes_the_entries_of_a_sigkilled_peer) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  auto server = start_server(d, cfg, "demo/doomed");
  const std::string id = ipcbus::id_to_hex(ipcbus::list_participants(d.domain_dir()).at(0).info.id());
  server->signal(SIGKILL);
  server->wait(10s);
  BOOST_REQUIRE(std::filesystem::exists(d.domain_dir() / (id + ".pub")));
  const auto list = run_cli({"--config", cfg, "list"});
  BOOST_TEST(list.output.find("1 stale entry") != std::string::npos, list.output);
  const auto dry = run_cli({"--config", cfg, "gc", "--dry-run"});
  BOOST_TEST(dry.exit_code == 0);
  BOOST_TEST(dry.output.find(id) != std::string::npos, dry.output);
  BOOST_TEST(std::filesystem::exists(d.domain_dir() / (id + ".pub")));  // a dry run removes nothing
  const auto gc = run_cli({"--config", cfg, "gc"});
  BOOST_TEST(gc.exit_code == 0);
  BOOST_TEST(gc.output.find("removed " + (d.domain_dir() / (id + ".pub")).string()) != std::string::npos, gc.output);
  for (const auto& e : std::filesystem::directory_iterator(d.domain_dir()))
    BOOST_TEST(e.path().filename().string().rfind(id, 0) != 0, e.path() << " survived gc");
}

#ifdef IPCBUS_HAVE_SHM
// Names ("/ipcbus-...") of the objects in /dev/shm that start with `prefix`.
std::vector<std::string> shm_objects_starting_with(const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm"))
    if (const auto name = "/" + e.path().filename().string(); name.starts_with(prefix)) out.push_back(name);
  return out;
}

BOOST_AUTO_TEST_CASE(gc_unlinks_the_shared_memory_of_a_sigkilled_shm_publisher) {
  scratch_domain d;
  const auto cfg = d.write_config("defaults: { transport: shm }\n").string();
  const std::string prefix = ipcbus::transport::shm::segment_prefix(d.domain_dir());
  auto server = start_server(d, cfg, "shm/doomed");
  const auto entry = ipcbus::list_participants(d.domain_dir()).at(0).info;
  BOOST_REQUIRE(entry.endpoint().starts_with("shm://"));
  const std::string ring = entry.endpoint().substr(6);  // "/ipcbus-<domain hash>-<id>"
  const std::string id = ipcbus::id_to_hex(entry.id());
  server->signal(SIGKILL);
  server->wait(10s);
  // Nothing reclaims it by itself: no other participant of this domain runs.
  BOOST_REQUIRE(shm_objects_starting_with(prefix) == std::vector<std::string>{ring});

  const auto dry = run_cli({"--config", cfg, "gc", "--dry-run"});
  BOOST_TEST(dry.exit_code == 0);
  BOOST_TEST(dry.output.find("stale shared memory: " + ring + "\n") != std::string::npos, dry.output);
  BOOST_TEST(shm_objects_starting_with(prefix).size() == 1u);  // a dry run removes nothing

  const auto gc = run_cli({"--config", cfg, "gc"});
  BOOST_TEST(gc.exit_code == 0);
  BOOST_TEST(gc.output.find("removed shared memory " + ring + "\n") != std::string::npos, gc.output);
  BOOST_TEST(shm_objects_starting_with(prefix).empty());
  for (const auto& e : std::filesystem::directory_iterator(d.domain_dir()))
    BOOST_TEST(e.path().filename().string().rfind(id, 0) != 0, e.path() << " survived gc");
  // A second run finds nothing left of this domain to reclaim.
  const auto again = run_cli({"--config", cfg, "gc", "--dry-run"});
  BOOST_TEST(again.output.find(prefix) == std::string::npos, again.output);
}
#endif

BOOST_AUTO_TEST_CASE(usage_errors_exit_2) {
  scratch_domain d;  // should a check regress, the command runs here, not on the real bus
  const auto cfg = d.write_config().string();
  auto usage = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", cfg});
    return run_cli(args, true, 10s);
  };
  BOOST_TEST(usage({}).exit_code == 2);
  BOOST_TEST(usage({"frobnicate"}).exit_code == 2);
  BOOST_TEST(usage({"list", "--no-such-option"}).exit_code == 2);
  BOOST_TEST(usage({"echo"}).exit_code == 2);                          // PATTERN missing
  BOOST_TEST(usage({"pub", "a/b", "--json", "{}"}).exit_code == 2);   // --type missing
  BOOST_TEST(usage({"pub", "a/b", "--type", "x.Y", "--json", "{}", "--rate", "0"}).exit_code == 2);
  BOOST_TEST(usage({"stats", "--interval", "soon"}).exit_code == 2);
  BOOST_TEST(run_cli({"--config", "/no/such/file.yaml", "list"}).exit_code == 2);
  const auto r = usage({"echo", "a", "--count", "-3", "--timeout", "1"});
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.output.rfind("ipcbus: ", 0) == 0, r.output);
  for (const char* cmd : {"list", "echo", "pub", "stats", "gc", "doctor"}) {
    const auto help = run_cli({cmd, "--help"}, false);
    BOOST_TEST(help.exit_code == 0, cmd);
    BOOST_TEST(help.output.find(std::string("ipcbus ") + cmd) != std::string::npos, help.output);
  }
}

BOOST_AUTO_TEST_CASE(an_invalid_topic_exits_2_with_a_clear_message) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  const auto pub = run_cli({"--config", cfg, "pub", "../../etc/passwd", "--type", "x.Y", "--json", "{}"});
  BOOST_TEST(pub.exit_code == 2);
  BOOST_TEST(pub.output.find("ipcbus: invalid topic '../../etc/passwd'") != std::string::npos, pub.output);
  const auto echo = run_cli({"--config", cfg, "echo", "../../etc/passwd", "-t", "1"});
  BOOST_TEST(echo.exit_code == 2);
  BOOST_TEST(echo.output.find("invalid topic pattern '../../etc/passwd'") != std::string::npos, echo.output);
  const auto domain = run_cli({"--config", cfg, "--domain", "../escape", "list"});
  BOOST_TEST(domain.exit_code == 2);
  BOOST_TEST(domain.output.find("invalid --domain") != std::string::npos, domain.output);
}
