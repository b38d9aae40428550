// ipcbus configuration: domain, per-topic transport and QoS rules (DESIGN.md section 7).
//
// A config is a plain value: build it once (from YAML, from IPCBUS_CONFIG, or
// from the embedded defaults) and share it read-only; it is then safe to read
// from any thread. Parsing is strict: unknown keys, wrong types and bad values
// are errors that name the file, line, key and what was expected.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace ipcbus {

enum class qos_policy { reliable, drop_oldest, drop_newest };

std::string_view to_string(qos_policy q) noexcept;

// Everything the bus needs to know about one topic.
struct topic_settings {
  std::string transport = "unix";             // URI scheme of the transport
  qos_policy qos = qos_policy::reliable;
  std::uint32_t depth = 64;                   // queue length per subscriber
  std::uint32_t history = 0;                  // messages kept for late joiners
  std::uint64_t max_message = 64ull << 20;    // bytes, payload of one message
  std::chrono::milliseconds publish_timeout{1000};  // reliable publish gives up after this
  // How a subscriber waits for shm:// data (other transports always sleep in the
  // kernel): after the last message it keeps polling for `spin` before it
  // sleeps; with busy_poll it never sleeps (one core stays busy, lowest latency).
  std::chrono::microseconds spin{0};
  bool busy_poll = false;
  // mq:// publishers: a frame larger than one queue message (msgsize_max) is
  // sent in fragments; when false it is refused with message_too_large.
  bool mq_fragment = true;
};

// One `topics:` entry. `match` is a pattern (see topic.hpp); `settings` is the
// defaults overlaid with the keys this rule sets.
struct topic_rule {
  std::string match;
  topic_settings settings;
  int line = 0;  // where the rule was written, for messages (0: not from a file)
};

struct bridge_settings {
  std::string listen;                  // e.g. "tcp://127.0.0.1:7447"; empty: do not listen
  std::vector<std::string> peers;      // URIs to dial
  std::vector<std::string> export_patterns;  // topics offered to peers
  std::string token;                   // shared secret; empty: none
  // TLS (`tls: { cert, key, ca }`): all three or none. PEM files.
  std::string tls_cert, tls_key, tls_ca;
  // Link timings in milliseconds and limits; 0 (or empty): not set here, the
  // bridge's built-in default applies (docs/configuration.md gives them).
  std::chrono::milliseconds heartbeat{0}, link_timeout{0}, write_stall{0}, handshake_timeout{0}, backoff_max{0},
      linger{0};
  std::optional<std::chrono::milliseconds> drain;  // 0 is a value here: stop without waiting
  std::uint32_t max_hops = 0;
  std::uint64_t queue_bytes = 0;
};

struct security_settings {
  std::vector<std::uint32_t> allow_uids;  // besides our own uid (and root)
  std::vector<std::uint32_t> allow_gids;
  std::string group;                      // shares the domain with this group's members; empty: private
  std::optional<std::uint32_t> group_gid;  // `group` resolved when the config was read
};

// What a stopping process does (SIGINT/SIGTERM, Bus::shutdown(), ~Bus).
struct shutdown_settings {
  // How long publishers may take to hand their queued frames to live
  // subscribers before their links are closed regardless.
  std::chrono::milliseconds drain{2000};
};

struct config {
  std::string domain = "default";
  std::filesystem::path runtime_dir;   // empty: $IPCBUS_RUNTIME_DIR, $XDG_RUNTIME_DIR/ipcbus, /tmp/ipcbus-<uid>
  topic_settings defaults;
  std::vector<topic_rule> topics;
  bridge_settings bridge;
  security_settings security;
  shutdown_settings shutdown;
  std::string source = "<embedded defaults>";  // file the config came from
  // The file it was read from (load_config_file, load_config_from_environment);
  // empty otherwise. Bus::reload_config() re-reads it.
  std::filesystem::path file;

  // The settings of the first rule whose pattern matches `topic`, else the defaults.
  // A subscription pattern is looked up as if it were a topic name.
  const topic_settings& settings_for(std::string_view topic) const;

  // The runtime directory after applying the environment fallbacks above.
  std::filesystem::path resolved_runtime_dir() const;
};

// Thrown by the throwing loaders; what() is the full, human-readable message
// ("bus.yaml:7: topics[1].qos: expected one of reliable, drop_oldest, drop_newest, got 'fast'").
// code() is errc::config_error.
class config_error : public std::system_error {
 public:
  explicit config_error(const std::string& message);
};

// Parses YAML text. `source_name` is used in messages. Throws config_error.
config parse_config(std::string_view yaml, const std::string& source_name = "<string>");
// Non-throwing form: on failure sets ec = errc::config_error and `message`.
std::optional<config> parse_config(std::string_view yaml, const std::string& source_name,
                                   std::error_code& ec, std::string& message);

// Reads and parses a file. Throws config_error (also when the file cannot be read).
config load_config_file(const std::filesystem::path& file);

// The file named by $IPCBUS_CONFIG if set, else the embedded defaults. Throws config_error.
config load_config_from_environment();

// Parses sizes such as "64MiB", "512KiB", "4096", "1GiB", "10MB" (SI). Returns
// nullopt on anything else (negative, overflow, unknown suffix).
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace ipcbus
