// Topic and pattern validation and matching (see topic.hpp).
//
// Validation is a security boundary: topic names become file names under the
// runtime directory, so anything that could climb out of it ("..", a leading
// '/'), hide in it (".", empty segments) or confuse a C API (NUL) is rejected,
// and the reason names the offending part so the caller can fix the name.
#include "ipcbus/topic.hpp"

#include <cstdio>

#include "ipcbus/error.hpp"

namespace ipcbus {
namespace detail {
namespace {

// Names quoted in messages are cut here: a hostile 100 KiB name should not
// turn into a 400 KiB log line.
constexpr std::size_t max_quoted_length = 80;

bool is_name_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

std::string hex_byte(unsigned char c) {
  char buf[5];
  std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
  return buf;
}

// Printable ASCII as is, everything else as \xNN, so a message never carries a
// NUL, a newline or a terminal escape sequence taken from untrusted input.
std::string printable(std::string_view text) {
  std::string out;
  const std::size_t shown = text.size() < max_quoted_length ? text.size() : max_quoted_length;
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      out += "\\\\";  // keep "\x41" in a name distinguishable from the byte 0x41
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += hex_byte(c);
    }
  }
  if (shown < text.size()) out += "...";
  return out;
}

// Splits at '/' one segment at a time. "a//b" yields "a", "", "b" and "" yields
// a single empty segment, so every empty segment is seen (and can be reported).
class segment_reader {
 public:
  explicit segment_reader(std::string_view text) : rest_(text) {}

  bool done() const { return done_; }

  std::string_view next() {
    const auto slash = rest_.find('/');
    const std::string_view segment = rest_.substr(0, slash);
    if (slash == std::string_view::npos) {
      done_ = true;
      rest_ = {};
    } else {
      rest_.remove_prefix(slash + 1);
    }
    return segment;
  }

 private:
  std::string_view rest_;
  bool done_ = false;
};

// What is being validated; decides the wording and whether wildcards pass.
struct name_kind {
  std::string_view noun;  // "topic" or "pattern"
  bool wildcards;
};

std::error_code reject(std::string* why, name_kind kind, std::string_view name,
                       const std::string& reason) {
  if (why != nullptr) {
    *why = std::string(kind.noun) + " '" + printable(name) + "': " + reason;
  }
  return make_error_code(errc::invalid_topic);
}

// The reason a single byte is refused, or an empty string if it is fine.
std::string bad_byte_reason(unsigned char c, std::string_view segment, name_kind kind) {
  const std::string where = "segment '" + printable(segment) + "'";
  if (c == '\0') return where + " contains a NUL byte";
  if (c == '*' || c == '#') {
    const std::string wildcard(1, static_cast<char>(c));
    if (!kind.wildcards) {
      return where + ": wildcard '" + wildcard +
             "' is only allowed in subscription patterns, not in topic names";
    }
    return where + ": wildcard '" + wildcard + "' must be a whole segment";
  }
  const std::string shown = c >= 0x20 && c < 0x7f && c != '\\'
                                ? std::string(1, static_cast<char>(c))
                                : hex_byte(c);
  return where + ": byte '" + shown +
         "' is not allowed (use only A-Z, a-z, 0-9, '_', '.' and '-')";
}

// The reason a segment is refused, or an empty string if it is fine.
std::string bad_segment_reason(std::string_view segment, bool is_last, name_kind kind) {
  if (segment.empty()) return "empty segment ('//') is not allowed";
  if (segment == "." || segment == "..") {
    return "segment '" + std::string(segment) + "' is not allowed";
  }
  if (kind.wildcards && segment == "*") return {};
  if (kind.wildcards && segment == "#") {
    return is_last ? std::string() : "wildcard '#' is only allowed as the last segment";
  }
  for (const char ch : segment) {
    const auto c = static_cast<unsigned char>(ch);
    if (!is_name_byte(c)) return bad_byte_reason(c, segment, kind);
  }
  return {};
}

std::error_code validate_name(std::string_view name, name_kind kind, std::string* why) {
  if (name.empty()) return reject(why, kind, name, "must not be empty");
  if (name.size() > max_topic_length) {
    return reject(why, kind, name,
                  "is " + std::to_string(name.size()) + " bytes long; at most " +
                      std::to_string(max_topic_length) + " are allowed");
  }
  if (name.front() == '/') {
    return reject(why, kind, name, "must not start with '/' (absolute paths are not allowed)");
  }
  if (name.back() == '/') return reject(why, kind, name, "must not end with '/'");

  segment_reader segments(name);
  while (!segments.done()) {
    const std::string_view segment = segments.next();
    const std::string reason = bad_segment_reason(segment, segments.done(), kind);
    if (!reason.empty()) return reject(why, kind, name, reason);
  }
  if (why != nullptr) why->clear();
  return {};
}

}  // namespace
}  // namespace detail

std::error_code validate_topic(std::string_view topic, std::string* why) {
  return detail::validate_name(topic, {"topic", false}, why);
}

std::error_code validate_pattern(std::string_view pattern, std::string* why) {
  return detail::validate_name(pattern, {"pattern", true}, why);
}

// Works segment by segment on any strings, valid or not, so that config lookups
// can match a subscription pattern such as "a/#" against the rules: a pattern
// segment "*" matches any one segment, a final "#" matches the rest (also
// nothing), everything else must be equal byte for byte.
bool topic_matches(std::string_view pattern, std::string_view topic) {
  detail::segment_reader want(pattern);
  detail::segment_reader have(topic);
  while (!want.done()) {
    const std::string_view wanted = want.next();
    if (wanted == "#" && want.done()) return true;
    if (have.done()) return false;
    const std::string_view got = have.next();
    if (wanted != "*" && wanted != got) return false;
  }
  return have.done();
}

bool is_literal_pattern(std::string_view pattern) {
  detail::segment_reader segments(pattern);
  while (!segments.done()) {
    const std::string_view segment = segments.next();
    if (segment == "*" || segment == "#") return false;
  }
  return true;
}

}  // namespace ipcbus
