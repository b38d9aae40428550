// Configuration parsing: the happy path, and the errors people will actually
// make, each of which must name the file, the line, the key and what was
// expected.
#define BOOST_TEST_MODULE config
#include <boost/test/unit_test.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "ipcbus/config.hpp"
#include "ipcbus/error.hpp"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// The message parse_config throws for `yaml`; fails the test if it parses.
std::string config_error_for(std::string_view yaml, const std::string& source = "bus.yaml") {
  try {
    ipcbus::parse_config(yaml, source);
  } catch (const ipcbus::config_error& e) {
    BOOST_TEST(e.code() == ipcbus::make_error_code(ipcbus::errc::config_error));
    return e.what();
  }
  BOOST_ERROR("config was accepted: " << yaml);
  return {};
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// Sets (or, with nullopt, unsets) an environment variable for one test and
// restores the previous value afterwards.
class env_override {
 public:
  env_override(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~env_override() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  env_override(const env_override&) = delete;
  env_override& operator=(const env_override&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A private directory for files a test writes, removed afterwards.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "ipcbus-config-test-XXXXXX").string();
    BOOST_TEST_REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const fs::path& path() const { return path_; }

  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path file = path_ / name;
    std::ofstream(file) << text;
    return file;
  }

 private:
  fs::path path_;
};

constexpr std::string_view full_example = R"(domain: robot_1
runtime_dir: /run/ipcbus-test
defaults: { transport: unix, qos: reliable, depth: 64, history: 0, max_message: 64MiB, publish_timeout_ms: 1000 }
topics:
  - { match: "video/#", transport: shm, qos: drop_oldest, depth: 8, spin_us: 50, busy_poll: true }
  - { match: "logs/#", transport: mq, history: 100, mq_fragment: false }
  - { match: "cmd/*", transport: pipe, qos: drop_newest, max_message: 4 KiB, publish_timeout_ms: 0 }
bridge: { listen: "tcp://127.0.0.1:7447", peers: ["tcp://10.0.0.2:7447"], export: ["sensors/#"], token: "s3cret" }
security: { allow_uids: [1000], allow_gids: [] }
)";

}  // namespace

BOOST_AUTO_TEST_SUITE(parsing)

BOOST_AUTO_TEST_CASE(empty_text_gives_the_embedded_defaults) {
  for (const char* text : {"", "# only a comment\n", "---\n"}) {
    const ipcbus::config cfg = ipcbus::parse_config(text, "empty.yaml");
    BOOST_TEST(cfg.domain == "default");
    BOOST_TEST(cfg.defaults.transport == "unix");
    BOOST_TEST(cfg.defaults.depth == 64u);
    BOOST_TEST(cfg.topics.empty());
    BOOST_TEST(cfg.source == "empty.yaml");
  }
}

BOOST_AUTO_TEST_CASE(full_example_is_parsed_into_every_field) {
  const ipcbus::config cfg = ipcbus::parse_config(full_example, "bus.yaml");
  BOOST_TEST(cfg.domain == "robot_1");
  BOOST_TEST(cfg.runtime_dir == fs::path("/run/ipcbus-test"));
  BOOST_TEST(cfg.defaults.max_message == 64ull << 20);
  BOOST_TEST_REQUIRE(cfg.topics.size() == 3u);

  const ipcbus::topic_rule& video = cfg.topics[0];
  BOOST_TEST(video.match == "video/#");
  BOOST_TEST(video.line == 5);
  BOOST_TEST(video.settings.transport == "shm");
  BOOST_TEST(ipcbus::to_string(video.settings.qos) == "drop_oldest");
  BOOST_TEST(video.settings.depth == 8u);
  BOOST_TEST(video.settings.spin.count() == 50);
  BOOST_TEST(video.settings.busy_poll);
  BOOST_TEST(!cfg.defaults.busy_poll);
  BOOST_TEST(cfg.defaults.spin.count() == 0);

  BOOST_TEST(cfg.topics[1].settings.history == 100u);
  BOOST_TEST(!cfg.topics[1].settings.mq_fragment);
  BOOST_TEST(cfg.defaults.mq_fragment);  // fragments unless a rule says otherwise
  BOOST_TEST(video.settings.mq_fragment);
  const ipcbus::topic_settings& cmd = cfg.topics[2].settings;
  BOOST_TEST(cmd.transport == "pipe");
  BOOST_TEST(ipcbus::to_string(cmd.qos) == "drop_newest");
  BOOST_TEST(cmd.max_message == 4096u);
  BOOST_TEST(cmd.publish_timeout.count() == 0);

  BOOST_TEST(cfg.bridge.listen == "tcp://127.0.0.1:7447");
  BOOST_TEST(cfg.bridge.peers == std::vector<std::string>{"tcp://10.0.0.2:7447"});
  BOOST_TEST(cfg.bridge.export_patterns == std::vector<std::string>{"sensors/#"});
  BOOST_TEST(cfg.bridge.token == "s3cret");
  BOOST_TEST(cfg.security.allow_uids == std::vector<std::uint32_t>{1000});
  BOOST_TEST(cfg.security.allow_gids.empty());
}

BOOST_AUTO_TEST_CASE(unknown_key_error_names_file_line_and_key) {
  const std::string text = "domain: a\ntopics:\n  - match: x\n    dpeth: 8\n";
  const std::string why = config_error_for(text, "bus.yaml");
  BOOST_TEST(why.rfind("bus.yaml:4: topics[0].dpeth: unknown key; expected one of ", 0) == 0u,
             why);
  BOOST_TEST(contains(why, "depth"));
}

BOOST_AUTO_TEST_CASE(unknown_top_level_key_is_an_error) {
  BOOST_TEST(config_error_for("domian: x\n").rfind("bus.yaml:1: domian: unknown key", 0) == 0u);
}

BOOST_AUTO_TEST_CASE(bad_enum_value_message_lists_the_allowed_values) {
  const std::string text = "topics:\n  - {match: a}\n  - {match: b, qos: fast}\n";
  BOOST_TEST(config_error_for(text) ==
             "bus.yaml:3: topics[1].qos: expected one of reliable, drop_oldest, drop_newest, "
             "got 'fast'");
  BOOST_TEST(config_error_for("defaults:\n  transport: carrier_pigeon\n") ==
             "bus.yaml:2: defaults.transport: expected one of unix, tcp, shm, pipe, mq, "
             "got 'carrier_pigeon'");
}

BOOST_AUTO_TEST_CASE(bad_size_is_rejected_with_examples) {
  const std::string why = config_error_for("defaults:\n  max_message: 64 MBs\n");
  BOOST_TEST(why.rfind("bus.yaml:2: defaults.max_message: expected a size", 0) == 0u, why);
  BOOST_TEST(contains(why, "got '64 MBs'"));
  BOOST_TEST(contains(config_error_for("defaults: {max_message: 0}"), "got '0'"));
  BOOST_TEST(contains(config_error_for("defaults: {max_message: 5GiB}"), "got '5GiB'"));
  BOOST_TEST(ipcbus::parse_config("defaults: {max_message: 4GiB}").defaults.max_message ==
             4ull << 30);
}

BOOST_AUTO_TEST_CASE(out_of_range_and_non_integer_numbers_are_rejected) {
  BOOST_TEST(config_error_for("defaults: {depth: 0}") ==
             "bus.yaml:1: defaults.depth: expected an integer from 1 to 1048576, got '0'");
  BOOST_TEST(contains(config_error_for("defaults: {depth: -3}"), "got '-3'"));
  BOOST_TEST(contains(config_error_for("defaults: {depth: 8.5}"), "got '8.5'"));
  BOOST_TEST(contains(config_error_for("defaults: {history: 65537}"), "from 0 to 65536"));
  BOOST_TEST(contains(config_error_for("defaults: {publish_timeout_ms: 3600001}"),
                      "publish_timeout_ms"));
  BOOST_TEST(contains(config_error_for("defaults: {depth: [1]}"), "got a list"));
  BOOST_TEST(config_error_for("defaults: {busy_poll: yes}") ==
             "bus.yaml:1: defaults.busy_poll: expected true or false, got 'yes'");
  BOOST_TEST(config_error_for("defaults: {mq_fragment: 1}") ==
             "bus.yaml:1: defaults.mq_fragment: expected true or false, got '1'");
  BOOST_TEST(contains(config_error_for("defaults: {spin_us: 1000001}"), "from 0 to 1000000"));
  BOOST_TEST(contains(config_error_for("defaults:\n  depth:\n"), "bus.yaml:2: defaults.depth"));
}

BOOST_AUTO_TEST_CASE(malformed_yaml_reports_line_and_column) {
  const std::string why = config_error_for("domain: a\ntopics: [ {match: a");
  BOOST_TEST(why.rfind("bus.yaml:", 0) == 0u);
  BOOST_TEST(contains(why, ": invalid YAML: "), why);
  BOOST_TEST(contains(config_error_for("a: [\n"), "invalid YAML"));
}

BOOST_AUTO_TEST_CASE(top_level_must_be_a_map) {
  BOOST_TEST(contains(config_error_for("- a\n- b\n"), "top level: expected a map"));
  BOOST_TEST(contains(config_error_for("hello\n"), "got 'hello'"));
}

BOOST_AUTO_TEST_CASE(more_than_one_document_is_rejected) {
  BOOST_TEST(config_error_for("domain: a\n---\ndomain: b\n") ==
             "bus.yaml:2: expected a single YAML document, found a second one");
}

// A stray flow entry makes yaml-cpp 0.7's parser report empty documents for
// ever (found by tests/fuzz/config_fuzz; corpus file regress_stray_comma.yaml):
// the parser used to collect them all and never returned.
BOOST_AUTO_TEST_CASE(stray_flow_entry_is_rejected_instead_of_hanging) {
  BOOST_TEST(contains(config_error_for(","), "single YAML document"));
  BOOST_TEST(contains(config_error_for(", max_message: 8KiB }\ntopicsruntime_dir: false } ]\n"),
                      "single YAML document"));
}

BOOST_AUTO_TEST_CASE(duplicate_key_is_rejected) {
  BOOST_TEST(config_error_for("domain: a\ndomain: b\n") == "bus.yaml:2: domain: duplicate key");
}

BOOST_AUTO_TEST_CASE(rule_without_match_is_rejected) {
  BOOST_TEST(contains(config_error_for("topics:\n  - {transport: shm}\n"),
                      "bus.yaml:2: topics[0]: missing the required key 'match'"));
}

BOOST_AUTO_TEST_CASE(rule_with_hostile_pattern_is_rejected_with_reason) {
  const std::string why = config_error_for("topics:\n  - match: ../#\n");
  BOOST_TEST(why.rfind("bus.yaml:2: topics[0].match: expected a valid topic pattern", 0) == 0u,
             why);
  BOOST_TEST(contains(why, "segment '..' is not allowed"));
  BOOST_TEST(contains(config_error_for("bridge: {export: [\"a//b\"]}"), "bridge.export[0]"));
}

BOOST_AUTO_TEST_CASE(hostile_domain_is_rejected) {
  BOOST_TEST(contains(config_error_for("domain: ../etc\n"), "domain: expected a domain name"));
  BOOST_TEST(contains(config_error_for("domain: a/b\n"), "got 'a/b'"));
  BOOST_TEST(contains(config_error_for("domain: ..\n"), "got '..'"));
}

BOOST_AUTO_TEST_CASE(relative_runtime_dir_and_bad_uris_are_rejected) {
  BOOST_TEST(contains(config_error_for("runtime_dir: run/bus\n"), "an absolute directory path"));
  BOOST_TEST(contains(config_error_for("bridge: {listen: 127.0.0.1:7447}"), "bridge.listen"));
  BOOST_TEST(contains(config_error_for("bridge: {peers: [\"tcp://\"]}"), "bridge.peers[0]"));
  BOOST_TEST(contains(config_error_for("security: {allow_uids: [-1]}"), "security.allow_uids[0]"));
}

BOOST_AUTO_TEST_CASE(a_sharing_group_is_resolved_when_read_and_an_unknown_one_is_refused) {
  const auto cfg = ipcbus::parse_config("security: { group: root }\n", "bus.yaml");
  BOOST_TEST(cfg.security.group == "root");
  BOOST_REQUIRE(cfg.security.group_gid.has_value());
  BOOST_TEST(*cfg.security.group_gid == 0u);
  const std::string e = config_error_for("security:\n  group: no-such-group-for-ipcbus\n");
  BOOST_TEST(contains(e, ":2: security.group: no such group 'no-such-group-for-ipcbus'"), e);
  BOOST_TEST(!ipcbus::parse_config("domain: d\n", "bus.yaml").security.group_gid.has_value());
}

BOOST_AUTO_TEST_CASE(shutdown_drain_is_read_in_milliseconds_and_defaults_to_two_seconds) {
  BOOST_TEST(ipcbus::parse_config("").shutdown.drain == 2000ms);
  BOOST_TEST(ipcbus::parse_config("shutdown: { drain_ms: 250 }\n").shutdown.drain == 250ms);
  BOOST_TEST(ipcbus::parse_config("shutdown: { drain_ms: 0 }\n").shutdown.drain == 0ms);
  BOOST_TEST(contains(config_error_for("shutdown: { drain_ms: -1 }\n"), "bus.yaml:1: shutdown.drain_ms: expected an integer"));
  BOOST_TEST(contains(config_error_for("shutdown:\n  drain: 2s\n"), "bus.yaml:2: shutdown.drain: unknown key; expected one of drain_ms"));
}

BOOST_AUTO_TEST_CASE(config_error_what_is_exactly_the_message) {
  const ipcbus::config_error e("bus.yaml:1: domain: expected x, got 'y'");
  BOOST_TEST(std::string(e.what()) == "bus.yaml:1: domain: expected x, got 'y'");
  BOOST_TEST(e.code() == ipcbus::make_error_code(ipcbus::errc::config_error));
}

BOOST_AUTO_TEST_CASE(non_throwing_parse_fills_error_code_and_message) {
  std::error_code ec;
  std::string message;
  const auto bad = ipcbus::parse_config("defaults: {qos: fast}", "x.yaml", ec, message);
  BOOST_TEST(!bad.has_value());
  BOOST_TEST(ec == ipcbus::make_error_code(ipcbus::errc::config_error));
  BOOST_TEST(message.rfind("x.yaml:1: defaults.qos: expected one of", 0) == 0u);

  const auto good = ipcbus::parse_config("domain: ok", "x.yaml", ec, message);
  BOOST_TEST_REQUIRE(good.has_value());
  BOOST_TEST(!ec);
  BOOST_TEST(message.empty());
  BOOST_TEST(good->domain == "ok");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(rules)

BOOST_AUTO_TEST_CASE(first_matching_rule_wins) {
  const ipcbus::config cfg = ipcbus::parse_config(
      "topics:\n"
      "  - {match: video/front, transport: tcp}\n"
      "  - {match: \"video/#\", transport: shm}\n"
      "  - {match: \"#\", transport: mq}\n");
  BOOST_TEST(cfg.settings_for("video/front").transport == "tcp");
  BOOST_TEST(cfg.settings_for("video/back").transport == "shm");
  BOOST_TEST(cfg.settings_for("video").transport == "shm");
  BOOST_TEST(cfg.settings_for("audio").transport == "mq");
}

BOOST_AUTO_TEST_CASE(unmatched_topic_gets_the_defaults) {
  const ipcbus::config cfg =
      ipcbus::parse_config("defaults: {depth: 5}\ntopics: [{match: \"a/*\", depth: 9}]\n");
  BOOST_TEST(cfg.settings_for("b").depth == 5u);
  BOOST_TEST(cfg.settings_for("a/x").depth == 9u);
  BOOST_TEST(cfg.settings_for("a/x/y").depth == 5u);
}

BOOST_AUTO_TEST_CASE(rules_overlay_defaults_declared_after_topics) {
  const ipcbus::config cfg = ipcbus::parse_config(
      "topics:\n"
      "  - {match: \"video/#\", qos: drop_oldest}\n"
      "defaults: {transport: shm, depth: 16, publish_timeout_ms: 250}\n");
  const ipcbus::topic_settings& video = cfg.settings_for("video/front");
  BOOST_TEST(video.transport == "shm");
  BOOST_TEST(video.depth == 16u);
  BOOST_TEST(video.publish_timeout.count() == 250);
  BOOST_TEST(ipcbus::to_string(video.qos) == "drop_oldest");
  BOOST_TEST(ipcbus::to_string(cfg.defaults.qos) == "reliable");
}

BOOST_AUTO_TEST_CASE(subscription_pattern_is_looked_up_like_a_topic) {
  const ipcbus::config cfg = ipcbus::parse_config(
      "topics:\n  - {match: \"cmd/*\", transport: pipe}\n  - {match: \"video/#\", transport: shm}\n");
  BOOST_TEST(cfg.settings_for("video/#").transport == "shm");
  BOOST_TEST(cfg.settings_for("cmd/#").transport == "pipe");
  BOOST_TEST(cfg.settings_for("other/#").transport == "unix");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sizes)

BOOST_AUTO_TEST_CASE(sizes_accept_binary_and_si_suffixes) {
  BOOST_TEST(ipcbus::parse_size("4096").value_or(0) == 4096);
  BOOST_TEST(ipcbus::parse_size("512KiB").value_or(0) == 512 * 1024);
  BOOST_TEST(ipcbus::parse_size("64MiB").value_or(0) == 64ull << 20);
  BOOST_TEST(ipcbus::parse_size("1GiB").value_or(0) == 1ull << 30);
  BOOST_TEST(ipcbus::parse_size("10MB").value_or(0) == 10'000'000);
  BOOST_TEST(ipcbus::parse_size("3 KB").value_or(0) == 3000);
  BOOST_TEST(ipcbus::parse_size("2 GB").value_or(0) == 2'000'000'000);
}

BOOST_AUTO_TEST_CASE(malformed_sizes_are_rejected) {
  for (const char* text : {"", " ", "-1", "1.5MiB", "MiB", "12XB", "12  MiB", " 12", "12 ",
                           "12mib", "0x10", "+5", "18446744073709551616",
                           "18446744073709551615KiB", "17179869184GiB"}) {
    BOOST_TEST(!ipcbus::parse_size(text).has_value(), "'" << text << "'");
  }
}

BOOST_AUTO_TEST_CASE(qos_names_round_trip_through_to_string) {
  BOOST_TEST(ipcbus::to_string(ipcbus::qos_policy::reliable) == "reliable");
  BOOST_TEST(ipcbus::to_string(ipcbus::qos_policy::drop_oldest) == "drop_oldest");
  BOOST_TEST(ipcbus::to_string(ipcbus::qos_policy::drop_newest) == "drop_newest");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(environment)

BOOST_AUTO_TEST_CASE(ipcbus_config_names_the_file_to_load) {
  const temp_dir dir;
  const fs::path file = dir.write("bus.yaml", "domain: from_env\ntopics: [{match: a, depth: 3}]\n");
  const env_override config_var("IPCBUS_CONFIG", file.string());
  const ipcbus::config cfg = ipcbus::load_config_from_environment();
  BOOST_TEST(cfg.domain == "from_env");
  BOOST_TEST(cfg.source == file.string());
  BOOST_TEST(cfg.file == file);  // what a reload re-reads
  BOOST_TEST(cfg.settings_for("a").depth == 3u);
  BOOST_TEST(ipcbus::parse_config("domain: x\n").file.empty());  // not from a file: nothing to re-read
}

BOOST_AUTO_TEST_CASE(unset_or_empty_ipcbus_config_gives_the_defaults) {
  {
    const env_override config_var("IPCBUS_CONFIG", std::nullopt);
    BOOST_TEST(ipcbus::load_config_from_environment().source == "<embedded defaults>");
  }
  const env_override config_var("IPCBUS_CONFIG", "");
  BOOST_TEST(ipcbus::load_config_from_environment().domain == "default");
}

BOOST_AUTO_TEST_CASE(errors_in_the_environment_file_name_that_file) {
  const temp_dir dir;
  const fs::path file = dir.write("bad.yaml", "domain: ok\n\ndefaults: {qos: fast}\n");
  const env_override config_var("IPCBUS_CONFIG", file.string());
  try {
    ipcbus::load_config_from_environment();
    BOOST_ERROR("bad config was accepted");
  } catch (const ipcbus::config_error& e) {
    BOOST_TEST(std::string(e.what()).rfind(file.string() + ":3: defaults.qos: ", 0) == 0u,
               e.what());
  }
}

BOOST_AUTO_TEST_CASE(missing_file_error_says_cannot_read_and_why) {
  const temp_dir dir;
  const fs::path missing = dir.path() / "missing.yaml";
  try {
    ipcbus::load_config_file(missing);
    BOOST_ERROR("missing file was accepted");
  } catch (const ipcbus::config_error& e) {
    BOOST_TEST(std::string(e.what()) ==
               missing.string() + ": cannot read: No such file or directory");
  }
}

BOOST_AUTO_TEST_CASE(runtime_dir_from_config_wins_over_the_environment) {
  const env_override runtime_var("IPCBUS_RUNTIME_DIR", "/env/runtime");
  ipcbus::config cfg;
  cfg.runtime_dir = "/configured";
  BOOST_TEST(cfg.resolved_runtime_dir() == fs::path("/configured"));
}

BOOST_AUTO_TEST_CASE(runtime_dir_falls_back_through_the_environment) {
  const ipcbus::config cfg;
  const env_override runtime_var("IPCBUS_RUNTIME_DIR", "/env/runtime");
  const env_override xdg_var("XDG_RUNTIME_DIR", "/run/user/4242");
  BOOST_TEST(cfg.resolved_runtime_dir() == fs::path("/env/runtime"));
  {
    const env_override no_runtime_var("IPCBUS_RUNTIME_DIR", std::nullopt);
    BOOST_TEST(cfg.resolved_runtime_dir() == fs::path("/run/user/4242/ipcbus"));
    const env_override no_xdg_var("XDG_RUNTIME_DIR", std::nullopt);
    BOOST_TEST(cfg.resolved_runtime_dir() ==
               fs::path("/tmp/ipcbus-" + std::to_string(::getuid())));
  }
}

BOOST_AUTO_TEST_CASE(relative_runtime_dirs_in_the_environment_are_ignored) {
  const ipcbus::config cfg;
  const env_override runtime_var("IPCBUS_RUNTIME_DIR", "relative/dir");
  const env_override xdg_var("XDG_RUNTIME_DIR", "");
  BOOST_TEST(cfg.resolved_runtime_dir() ==
             fs::path("/tmp/ipcbus-" + std::to_string(::getuid())));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(bridge_timings_are_read_and_checked) {
  const auto cfg = ipcbus::parse_config(
      "bridge: { heartbeat_ms: 200, link_timeout_ms: 1500, write_stall_ms: 9000, handshake_timeout_ms: 700,\n"
      "          backoff_max_ms: 5000, linger_ms: 8000, drain_ms: 0, max_hops: 3, queue_bytes: 2MiB }\n");
  BOOST_TEST(cfg.bridge.heartbeat.count() == 200);
  BOOST_TEST(cfg.bridge.link_timeout.count() == 1500);
  BOOST_TEST(cfg.bridge.write_stall.count() == 9000);
  BOOST_TEST(cfg.bridge.handshake_timeout.count() == 700);
  BOOST_TEST(cfg.bridge.backoff_max.count() == 5000);
  BOOST_TEST(cfg.bridge.linger.count() == 8000);
  BOOST_TEST((cfg.bridge.drain && cfg.bridge.drain->count() == 0));  // 0 is a value: stop at once
  BOOST_TEST(cfg.bridge.max_hops == 3u);
  BOOST_TEST(cfg.bridge.queue_bytes == 2u << 20);
  // Not written: left unset, so the bridge's defaults apply.
  const auto plain = ipcbus::parse_config("bridge: { listen: \"tcp://127.0.0.1:7447\" }\n");
  BOOST_TEST(plain.bridge.heartbeat.count() == 0);
  BOOST_TEST(!plain.bridge.drain.has_value());
  BOOST_TEST(plain.bridge.max_hops == 0u);
  BOOST_TEST(plain.bridge.queue_bytes == 0u);
  // Out of range or not a number: an error naming the key.
  BOOST_TEST(contains(config_error_for("bridge: { heartbeat_ms: 0 }"), "bridge.heartbeat_ms"));
  BOOST_TEST(contains(config_error_for("bridge: { link_timeout_ms: 3600001 }"), "bridge.link_timeout_ms"));
  BOOST_TEST(contains(config_error_for("bridge: { write_stall_ms: -5 }"), "bridge.write_stall_ms"));
  BOOST_TEST(contains(config_error_for("bridge: { handshake_timeout_ms: soon }"), "bridge.handshake_timeout_ms"));
  BOOST_TEST(contains(config_error_for("bridge: { backoff_max_ms: 1.5 }"), "bridge.backoff_max_ms"));
  BOOST_TEST(contains(config_error_for("bridge: { linger_ms: 0 }"), "bridge.linger_ms"));
  BOOST_TEST(contains(config_error_for("bridge: { drain_ms: [1] }"), "bridge.drain_ms"));
  BOOST_TEST(contains(config_error_for("bridge: { max_hops: 256 }"), "bridge.max_hops"));
  BOOST_TEST(contains(config_error_for("bridge: { max_hops: 0 }"), "bridge.max_hops"));
  BOOST_TEST(contains(config_error_for("bridge: { queue_bytes: 0 }"), "bridge.queue_bytes"));
  BOOST_TEST(contains(config_error_for("bridge: { heartbeat: 200 }"), "bridge"));  // unknown key
}

BOOST_AUTO_TEST_CASE(bridge_tls_names_three_files_and_refuses_unknown_keys) {
  const auto cfg = ipcbus::parse_config("bridge: { tls: { cert: /etc/a.pem, key: /etc/a.key, ca: /etc/ca.pem } }\n");
  BOOST_TEST(cfg.bridge.tls_cert == "/etc/a.pem");
  BOOST_TEST(cfg.bridge.tls_key == "/etc/a.key");
  BOOST_TEST(cfg.bridge.tls_ca == "/etc/ca.pem");
  BOOST_TEST(contains(config_error_for("bridge: { tls: { certificate: x } }"), "bridge.tls"));
}
