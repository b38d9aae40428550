// Topic names and subscription patterns (DESIGN.md section 2).
//
// A topic is segments of [A-Za-z0-9_.-] joined by '/', at most 255 bytes.
// Empty segments, "." and "..", NUL, a leading '/' and any other byte are
// rejected: topic names end up in file names, so this is a security check.
// A pattern may also use '*' as a whole segment (exactly one segment) and '#'
// as the last segment (any number of segments, including none).
//
// Thread-safety: free functions without shared state.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace ipcbus {

inline constexpr std::size_t max_topic_length = 255;

// Returns an empty error code for a valid topic; otherwise errc::invalid_topic
// and, when `why` is given, a sentence saying what is wrong.
std::error_code validate_topic(std::string_view topic, std::string* why = nullptr);

// As validate_topic, but also accepts the wildcards '*' and a trailing '#'.
std::error_code validate_pattern(std::string_view pattern, std::string* why = nullptr);

// True when `topic` (a valid topic) matches `pattern` (a valid pattern).
bool topic_matches(std::string_view pattern, std::string_view topic);

// True when the pattern has no wildcard.
bool is_literal_pattern(std::string_view pattern);

}  // namespace ipcbus
