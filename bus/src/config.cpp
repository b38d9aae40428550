// Configuration parsing with yaml-cpp (see config.hpp and DESIGN.md section 7).
//
// The parser is strict on purpose: a typo in a key ("dpeth: 8") silently
// ignored would leave a topic on the wrong transport or QoS with nothing to
// say why, so every unknown key, duplicate key, wrong type and out-of-range
// value is an error naming file, line, key path and what was expected.
// Key paths index lists from 0: "topics[0]" is the first rule.
#include "ipcbus/config.hpp"

#include <fcntl.h>
#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "ipcbus/error.hpp"
#include "ipcbus/topic.hpp"

namespace ipcbus {
namespace detail {
namespace {

// The gid of group `name`, or nothing if this host has no such group.
std::optional<std::uint32_t> group_id(const std::string& name) {
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  if (name.empty() || ::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found) != 0 || !found) return {};
  return static_cast<std::uint32_t>(g.gr_gid);
}

// A config file is a few KiB; refusing huge inputs keeps a mistaken
// IPCBUS_CONFIG=/dev/zero from eating memory.
constexpr std::size_t max_config_file_size = 16u << 20;
constexpr std::size_t max_quoted_value_length = 80;

constexpr std::uint64_t max_depth = 1u << 20;
constexpr std::uint64_t max_history = 1u << 16;
constexpr std::uint64_t max_message_limit = 4ull << 30;
constexpr std::uint64_t max_publish_timeout_ms = 3'600'000;
constexpr std::uint64_t max_drain_ms = 3'600'000;
constexpr std::uint64_t max_spin_us = 1'000'000;
constexpr std::uint64_t max_bridge_timing_ms = 3'600'000;
constexpr std::uint64_t max_bridge_hops = 255;
constexpr std::uint64_t max_id = 4'294'967'294u;  // (uid_t)-1 means "no id" to the kernel

constexpr std::array<std::string_view, 5> transports = {"unix", "tcp", "shm", "pipe", "mq"};
constexpr std::array<std::string_view, 3> qos_names = {"reliable", "drop_oldest", "drop_newest"};

// Printable ASCII as is, other bytes as \xNN: values come from a file someone
// else may have written, and end up in logs and terminals.
std::string quote(std::string_view text) {
  std::string out = "'";
  for (std::size_t i = 0; i < text.size() && i < max_quoted_value_length; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
      out += buf;
    }
  }
  if (text.size() > max_quoted_value_length) out += "...";
  return out + "'";
}

template <class Words>
std::string join(const Words& words) {
  std::string out;
  for (const auto word : words) out += (out.empty() ? "" : ", ") + std::string(word);
  return out;
}

std::string describe(const YAML::Node& value) {
  switch (value.Type()) {
    case YAML::NodeType::Scalar: return quote(value.Scalar());
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    default: return "nothing (null)";
  }
}

// Counts documents and remembers where the second one starts; builds nothing.
class document_counter : public YAML::EventHandler {
 public:
  int documents = 0;
  int second_line = 0;
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents == 2) second_line = mark.line + 1;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Throws config_error when `text` holds more than one YAML document (and
// YAML::Exception on a syntax error in the first two). Not YAML::LoadAll:
// yaml-cpp 0.7's LoadAll never returns on some malformed text (a stray flow
// end such as `} ]` after a key, found by tests/fuzz/config_fuzz) and grows
// memory without bound, as its parser keeps reporting empty documents. The
// parser here stops at the second document.
void require_single_document(const std::string& text, const std::string& source_name) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  document_counter counter;
  while (counter.documents < 2 && parser.HandleNextDocument(counter)) {
  }
  if (counter.documents > 1) {
    throw config_error(source_name + ":" + std::to_string(counter.second_line) +
                       ": expected a single YAML document, found a second one");
  }
}

int line_of(const YAML::Node& node, int fallback) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? fallback : mark.line + 1;
}

// Where a value sits in the document: its key path and 1-based line.
struct location {
  std::string path;
  int line = 0;

  location child(const std::string& key, int key_line) const {
    return {path.empty() ? key : path + "." + key, key_line};
  }
  // A null element ("-" alone) has no mark of its own: use the list's line.
  location element(std::size_t index, const YAML::Node& node) const {
    return {path + "[" + std::to_string(index) + "]", node.IsNull() ? line : line_of(node, line)};
  }
};

class config_parser {
 public:
  explicit config_parser(std::string source) : source_(std::move(source)) {}

  config parse(const YAML::Node& root) const;

 private:
  [[noreturn]] void fail(const location& at, const std::string& text) const;
  [[noreturn]] void expected(const location& at, std::string_view what,
                             const YAML::Node& got) const;

  template <class F>
  void for_each_key(const YAML::Node& map, const location& at,
                    std::initializer_list<std::string_view> allowed, F&& on_key) const;
  void require_map(const YAML::Node& node, const location& at) const;

  std::string scalar(const YAML::Node& value, const location& at, std::string_view what) const;
  std::string optional_string(const YAML::Node& value, const location& at) const;
  std::uint64_t integer(const YAML::Node& value, const location& at, std::uint64_t min,
                        std::uint64_t max) const;
  std::uint64_t size(const YAML::Node& value, const location& at) const;
  bool boolean(const YAML::Node& value, const location& at) const;
  std::string uri(const YAML::Node& value, const location& at) const;
  std::string pattern(const YAML::Node& value, const location& at) const;
  template <class F>
  void for_each_element(const YAML::Node& list, const location& at, F&& on_element) const;

  void apply_setting(const std::string& key, const YAML::Node& value, const location& at,
                     topic_settings& settings) const;
  topic_settings settings(const YAML::Node& map, const location& at,
                          const topic_settings& base) const;
  topic_rule rule(const YAML::Node& map, const location& at, const topic_settings& base) const;
  std::string domain(const YAML::Node& value, const location& at) const;
  std::filesystem::path runtime_dir(const YAML::Node& value, const location& at) const;
  bridge_settings bridge(const YAML::Node& map, const location& at) const;
  security_settings security(const YAML::Node& map, const location& at) const;
  shutdown_settings shutdown(const YAML::Node& map, const location& at) const;

  std::string source_;
};

void config_parser::fail(const location& at, const std::string& text) const {
  throw config_error(source_ + ":" + std::to_string(at.line) + ": " + at.path + ": " + text);
}

void config_parser::expected(const location& at, std::string_view what,
                             const YAML::Node& got) const {
  fail(at, "expected " + std::string(what) + ", got " + describe(got));
}

void config_parser::require_map(const YAML::Node& node, const location& at) const {
  if (!node.IsMap()) expected(at, "a map of settings", node);
}

// Visits the entries of a map after checking each key is a plain name, is
// allowed here and appears only once (yaml-cpp keeps duplicates silently).
// A null section ("bridge:" with nothing after it) is an empty map.
template <class F>
void config_parser::for_each_key(const YAML::Node& map, const location& at,
                                 std::initializer_list<std::string_view> allowed,
                                 F&& on_key) const {
  if (map.IsNull()) return;
  require_map(map, at);
  std::set<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    const int key_line = line_of(it->first, at.line);
    if (!it->first.IsScalar()) {
      expected({at.path.empty() ? "top level" : at.path, key_line}, "a key name", it->first);
    }
    const std::string key = it->first.Scalar();
    const location here = at.child(key, key_line);
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      fail(here, "unknown key; expected one of " + join(allowed));
    }
    if (!seen.insert(key).second) fail(here, "duplicate key");
    // A null value has no mark of its own (yaml-cpp points past it): use the key's.
    const location value_at{here.path,
                            it->second.IsNull() ? key_line : line_of(it->second, key_line)};
    on_key(key, it->second, value_at);
  }
}

std::string config_parser::scalar(const YAML::Node& value, const location& at,
                                  std::string_view what) const {
  if (!value.IsScalar()) expected(at, what, value);
  return value.Scalar();
}

std::string config_parser::optional_string(const YAML::Node& value, const location& at) const {
  return value.IsNull() ? std::string() : scalar(value, at, "a string");
}

std::uint64_t config_parser::integer(const YAML::Node& value, const location& at,
                                     std::uint64_t min, std::uint64_t max) const {
  const std::string what =
      "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  const std::string text = scalar(value, at, what);
  std::uint64_t result = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), result);
  if (ec != std::errc() || end != text.data() + text.size() || result < min || result > max) {
    expected(at, what, value);
  }
  return result;
}

// Only YAML's plain spellings: "yes"/"on" are what YAML 1.1 silently took for
// booleans, and a typo must not turn into one.
bool config_parser::boolean(const YAML::Node& value, const location& at) const {
  constexpr std::string_view what = "true or false";
  const std::string text = scalar(value, at, what);
  if (text == "true") return true;
  if (text == "false") return false;
  expected(at, what, value);
}

std::uint64_t config_parser::size(const YAML::Node& value, const location& at) const {
  constexpr std::string_view what = "a size from 1 byte to 4GiB such as 4096, 512KiB or 64MiB";
  const auto bytes = parse_size(scalar(value, at, what));
  if (!bytes || *bytes < 1 || *bytes > max_message_limit) expected(at, what, value);
  return *bytes;
}

// Only the shape is checked ("scheme://rest"); whether a transport exists for
// the scheme is the registry's business when the bridge starts.
std::string config_parser::uri(const YAML::Node& value, const location& at) const {
  constexpr std::string_view what = "a URI such as tcp://127.0.0.1:7447";
  const std::string text = scalar(value, at, what);
  const auto colon = text.find("://");
  bool ok = colon != std::string::npos && colon > 0 && colon + 3 < text.size();
  for (std::size_t i = 0; ok && i < colon; ++i) {
    const char c = text[i];
    ok = (c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-'));
  }
  if (!ok) expected(at, what, value);
  return text;
}

std::string config_parser::pattern(const YAML::Node& value, const location& at) const {
  const std::string text = scalar(value, at, "a topic pattern such as \"video/#\"");
  std::string why;
  if (validate_pattern(text, &why)) fail(at, "expected a valid topic pattern (" + why + ")");
  return text;
}

template <class F>
void config_parser::for_each_element(const YAML::Node& list, const location& at,
                                     F&& on_element) const {
  if (list.IsNull()) return;
  if (!list.IsSequence()) expected(at, "a list", list);
  for (std::size_t i = 0; i < list.size(); ++i) on_element(list[i], at.element(i, list[i]));
}

void config_parser::apply_setting(const std::string& key, const YAML::Node& value,
                                  const location& at, topic_settings& settings) const {
  if (key == "transport") {
    const std::string what = "one of " + join(transports);
    settings.transport = scalar(value, at, what);
    if (std::find(transports.begin(), transports.end(), settings.transport) == transports.end()) {
      expected(at, what, value);
    }
  } else if (key == "qos") {
    const std::string what = "one of " + join(qos_names);
    const std::string name = scalar(value, at, what);
    const auto found = std::find(qos_names.begin(), qos_names.end(), name);
    if (found == qos_names.end()) expected(at, what, value);
    settings.qos = static_cast<qos_policy>(found - qos_names.begin());
  } else if (key == "depth") {
    settings.depth = static_cast<std::uint32_t>(integer(value, at, 1, max_depth));
  } else if (key == "history") {
    settings.history = static_cast<std::uint32_t>(integer(value, at, 0, max_history));
  } else if (key == "max_message") {
    settings.max_message = size(value, at);
  } else if (key == "publish_timeout_ms") {
    settings.publish_timeout =
        std::chrono::milliseconds(integer(value, at, 0, max_publish_timeout_ms));
  } else if (key == "spin_us") {
    settings.spin = std::chrono::microseconds(integer(value, at, 0, max_spin_us));
  } else if (key == "busy_poll") {
    settings.busy_poll = boolean(value, at);
  } else if (key == "mq_fragment") {
    settings.mq_fragment = boolean(value, at);
  }
}

topic_settings config_parser::settings(const YAML::Node& map, const location& at,
                                       const topic_settings& base) const {
  topic_settings result = base;
  for_each_key(map, at,
               {"transport", "qos", "depth", "history", "max_message", "publish_timeout_ms", "spin_us",
                "busy_poll", "mq_fragment"},
               [&](const std::string& key, const YAML::Node& value, const location& value_at) {
                 apply_setting(key, value, value_at, result);
               });
  return result;
}

// A rule is `match` plus any of the settings keys, overlaid on the defaults.
topic_rule config_parser::rule(const YAML::Node& map, const location& at,
                               const topic_settings& base) const {
  if (map.IsNull()) expected(at, "a map with a 'match' key", map);
  require_map(map, at);
  topic_rule result;
  result.settings = base;
  result.line = at.line;
  bool has_match = false;
  for_each_key(map, at,
               {"match", "transport", "qos", "depth", "history", "max_message",
                "publish_timeout_ms", "spin_us", "busy_poll", "mq_fragment"},
               [&](const std::string& key, const YAML::Node& value, const location& value_at) {
                 if (key == "match") {
                   result.match = pattern(value, value_at);
                   has_match = true;
                 } else {
                   apply_setting(key, value, value_at, result.settings);
                 }
               });
  if (!has_match) fail(at, "missing the required key 'match' (a topic pattern such as \"video/#\")");
  return result;
}

// The domain names a directory under the runtime dir: one safe segment.
std::string config_parser::domain(const YAML::Node& value, const location& at) const {
  constexpr std::string_view what =
      "a domain name of [A-Za-z0-9_.-] characters, without '/' and not '.' or '..'";
  const std::string text = scalar(value, at, what);
  if (validate_topic(text) || text.find('/') != std::string::npos) expected(at, what, value);
  return text;
}

// Relative paths would resolve against each process's working directory, so
// two processes of one bus could disagree on where the bus lives.
std::filesystem::path config_parser::runtime_dir(const YAML::Node& value,
                                                 const location& at) const {
  constexpr std::string_view what = "an absolute directory path";
  const std::string text = optional_string(value, at);
  if (text.empty()) return {};
  if (text.front() != '/' || text.find('\0') != std::string::npos) expected(at, what, value);
  return text;
}

bridge_settings config_parser::bridge(const YAML::Node& map, const location& at) const {
  bridge_settings result;
  for_each_key(map, at,
               {"listen", "peers", "export", "token", "tls", "heartbeat_ms", "link_timeout_ms", "write_stall_ms",
                "handshake_timeout_ms", "backoff_max_ms", "linger_ms", "drain_ms", "max_hops", "queue_bytes"},
               [&](const std::string& key, const YAML::Node& value, const location& value_at) {
                 // The timings that must be at least 1 ms (0 means "not set").
                 static constexpr std::pair<std::string_view, std::chrono::milliseconds bridge_settings::*>
                     timings[] = {{"heartbeat_ms", &bridge_settings::heartbeat},
                                  {"link_timeout_ms", &bridge_settings::link_timeout},
                                  {"write_stall_ms", &bridge_settings::write_stall},
                                  {"handshake_timeout_ms", &bridge_settings::handshake_timeout},
                                  {"backoff_max_ms", &bridge_settings::backoff_max},
                                  {"linger_ms", &bridge_settings::linger}};
                 for (const auto& [name, field] : timings) {
                   if (key != name) continue;
                   result.*field = std::chrono::milliseconds(integer(value, value_at, 1, max_bridge_timing_ms));
                   return;
                 }
                 if (key == "drain_ms") {
                   result.drain = std::chrono::milliseconds(integer(value, value_at, 0, max_bridge_timing_ms));
                 } else if (key == "max_hops") {
                   result.max_hops = static_cast<std::uint32_t>(integer(value, value_at, 1, max_bridge_hops));
                 } else if (key == "queue_bytes") {
                   result.queue_bytes = size(value, value_at);
                 } else if (key == "listen") {
                   if (!value.IsNull() && !(value.IsScalar() && value.Scalar().empty())) {
                     result.listen = uri(value, value_at);
                   }
                 } else if (key == "peers") {
                   for_each_element(value, value_at, [&](const YAML::Node& e, const location& l) {
                     result.peers.push_back(uri(e, l));
                   });
                 } else if (key == "export") {
                   for_each_element(value, value_at, [&](const YAML::Node& e, const location& l) {
                     result.export_patterns.push_back(pattern(e, l));
                   });
                 } else if (key == "tls") {
                   for_each_key(value, value_at, {"cert", "key", "ca"},
                                [&](const std::string& k, const YAML::Node& v, const location& v_at) {
                                  std::string& field = k == "cert" ? result.tls_cert
                                                       : k == "key" ? result.tls_key
                                                                    : result.tls_ca;
                                  field = scalar(v, v_at, "a file path");
                                });
                 } else {
                   result.token = optional_string(value, value_at);
                 }
               });
  return result;
}

security_settings config_parser::security(const YAML::Node& map, const location& at) const {
  security_settings result;
  for_each_key(map, at, {"allow_uids", "allow_gids", "group"},
               [&](const std::string& key, const YAML::Node& value, const location& value_at) {
                 if (key == "group") {
                   result.group = scalar(value, value_at, "a group name");
                   result.group_gid = group_id(result.group);
                   if (!result.group_gid) fail(value_at, "no such group '" + result.group + "' on this host");
                   return;
                 }
                 auto& ids = key == "allow_uids" ? result.allow_uids : result.allow_gids;
                 for_each_element(value, value_at, [&](const YAML::Node& e, const location& l) {
                   ids.push_back(static_cast<std::uint32_t>(integer(e, l, 0, max_id)));
                 });
               });
  return result;
}

shutdown_settings config_parser::shutdown(const YAML::Node& map, const location& at) const {
  shutdown_settings result;
  for_each_key(map, at, {"drain_ms"},
               [&](const std::string&, const YAML::Node& value, const location& value_at) {
                 result.drain = std::chrono::milliseconds(integer(value, value_at, 0, max_drain_ms));
               });
  return result;
}

// `defaults` is parsed before `topics` wherever it appears in the file, so a
// rule always overlays the file's defaults, not the built-in ones.
config config_parser::parse(const YAML::Node& root) const {
  config result;
  result.source = source_;
  if (root.IsNull()) return result;
  const location top{"top level", line_of(root, 1)};
  require_map(root, top);

  struct section {
    std::string key;
    YAML::Node value;
    location at;
  };
  std::vector<section> sections;
  for_each_key(root, {"", top.line},
               {"domain", "runtime_dir", "defaults", "topics", "bridge", "security", "shutdown"},
               [&](const std::string& key, const YAML::Node& value, const location& at) {
                 if (key == "defaults") {
                   result.defaults = settings(value, at, result.defaults);
                 } else {
                   sections.push_back({key, value, at});
                 }
               });
  for (const auto& [key, value, at] : sections) {
    if (key == "domain") {
      result.domain = domain(value, at);
    } else if (key == "runtime_dir") {
      result.runtime_dir = runtime_dir(value, at);
    } else if (key == "topics") {
      for_each_element(value, at, [&](const YAML::Node& e, const location& l) {
        result.topics.push_back(rule(e, l, result.defaults));
      });
    } else if (key == "bridge") {
      result.bridge = bridge(value, at);
    } else if (key == "shutdown") {
      result.shutdown = shutdown(value, at);
    } else {
      result.security = security(value, at);
    }
  }
  return result;
}

std::string syntax_error(const std::string& source, const YAML::Exception& e) {
  if (e.mark.is_null()) return source + ": invalid YAML: " + e.msg;
  return source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
         ": invalid YAML: " + e.msg;
}

[[noreturn]] void cannot_read(const std::filesystem::path& file, const std::string& why) {
  throw config_error(file.string() + ": cannot read: " + why);
}

// POSIX I/O rather than iostreams: errno is what makes the message useful
// ("Permission denied", "Is a directory"), and iostreams do not promise it.
std::string read_file(const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) cannot_read(file, std::generic_category().message(errno));
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      cannot_read(file, std::generic_category().message(error));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > max_config_file_size) {
      ::close(fd);
      cannot_read(file, "larger than the 16 MiB limit for a configuration file");
    }
  }
  ::close(fd);
  return text;
}

// XDG: "a relative path ... should be considered invalid and ignored".
std::optional<std::filesystem::path> absolute_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || value[0] != '/') return std::nullopt;
  return std::filesystem::path(value);
}

}  // namespace
}  // namespace detail

config_error::config_error(const std::string& message)
    : std::system_error(make_error_code(errc::config_error), message) {
  // std::system_error's what() is "<message>: <category text>". The header
  // declares no what() override, so replace the runtime_error part's text
  // instead; code() lives in system_error and is left untouched.
  static_cast<std::runtime_error&>(*this) = std::runtime_error(message);
}

std::string_view to_string(qos_policy q) noexcept {
  switch (q) {
    case qos_policy::reliable: return "reliable";
    case qos_policy::drop_oldest: return "drop_oldest";
    case qos_policy::drop_newest: return "drop_newest";
  }
  return "unknown";
}

config parse_config(std::string_view yaml, const std::string& source_name) {
  try {
    const std::string text(yaml);
    detail::require_single_document(text, source_name);
    // Builds the first document only (an empty text gives a null node).
    return detail::config_parser(source_name).parse(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    throw config_error(detail::syntax_error(source_name, e));
  }
}

std::optional<config> parse_config(std::string_view yaml, const std::string& source_name,
                                   std::error_code& ec, std::string& message) {
  try {
    config result = parse_config(yaml, source_name);
    ec.clear();
    message.clear();
    return result;
  } catch (const config_error& e) {
    ec = e.code();
    message = e.what();
    return std::nullopt;
  }
}

config load_config_file(const std::filesystem::path& file) {
  config result = parse_config(detail::read_file(file), file.string());
  result.file = file;
  return result;
}

config load_config_from_environment() {
  const char* file = std::getenv("IPCBUS_CONFIG");
  if (file == nullptr || file[0] == '\0') return config{};
  return load_config_file(file);
}

// Strict on purpose: "1.5MiB" or "64mb" could mean several things, and a
// size that silently means something else is worse than an error.
std::optional<std::uint64_t> parse_size(std::string_view text) {
  struct unit {
    std::string_view suffix;
    std::uint64_t bytes;
  };
  static constexpr std::array<unit, 7> units = {{{"KiB", 1ull << 10}, {"MiB", 1ull << 20},
                                                 {"GiB", 1ull << 30}, {"KB", 1'000},
                                                 {"kB", 1'000}, {"MB", 1'000'000},
                                                 {"GB", 1'000'000'000}}};
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  std::uint64_t value = 0;
  if (std::from_chars(text.data(), text.data() + digits, value).ec != std::errc()) {
    return std::nullopt;  // overflow
  }
  std::string_view suffix = text.substr(digits);
  if (suffix.empty()) return value;
  if (suffix.front() == ' ') suffix.remove_prefix(1);
  for (const unit& u : units) {
    if (u.suffix != suffix) continue;
    if (value > std::numeric_limits<std::uint64_t>::max() / u.bytes) return std::nullopt;
    return value * u.bytes;
  }
  return std::nullopt;
}

const topic_settings& config::settings_for(std::string_view topic) const {
  for (const auto& rule : topics) {
    if (topic_matches(rule.match, topic)) return rule.settings;
  }
  return defaults;
}

std::filesystem::path config::resolved_runtime_dir() const {
  if (!runtime_dir.empty()) return runtime_dir;
  if (auto dir = detail::absolute_env("IPCBUS_RUNTIME_DIR")) return *dir;
  if (auto dir = detail::absolute_env("XDG_RUNTIME_DIR")) return *dir / "ipcbus";
  return "/tmp/ipcbus-" + std::to_string(::getuid());
}

}  // namespace ipcbus
