// Small text encoders for the tool's output: a one-line JSON object builder,
// hex previews and base64 for raw payloads.
//
// The tool's own JSON is flat (strings, integers and already-encoded JSON from
// protobuf's json_util), so a builder of a few lines beats a JSON library here.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

namespace ipcbus::cli {

// `text` as a JSON string literal, quotes included; control bytes are escaped.
// Invalid UTF-8 is passed through (topics and type names are ASCII by rule).
std::string json_quote(std::string_view text);

// Builds {"k":v,...} in insertion order, on one line.
class json_object {
 public:
  json_object& add(std::string_view key, std::string_view value);
  json_object& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  json_object& add(std::string_view key, const std::string& value) { return add(key, std::string_view(value)); }
  template <std::integral I>
  json_object& add(std::string_view key, I value) {
    return add_raw(key, std::to_string(value));
  }
  json_object& add(std::string_view key, double value);
  // `json` must already be valid JSON (an object from json_util, a number ...).
  json_object& add_raw(std::string_view key, std::string_view json);
  std::string str() const { return text_ + "}"; }

 private:
  std::string text_ = "{";
};

// "0a 08 ff ..." of the first `max` bytes, with " ..." when there were more.
std::string hex_preview(std::string_view bytes, std::size_t max = 64);

// Standard base64 (RFC 4648) with padding, as protobuf's JSON mapping uses for bytes.
std::string base64(std::string_view bytes);

}  // namespace ipcbus::cli
