#include "json_text.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>

namespace ipcbus::cli {

std::string json_quote(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

json_object& json_object::add(std::string_view key, std::string_view value) {
  return add_raw(key, json_quote(value));
}

json_object& json_object::add(std::string_view key, double value) {
  // JSON has no NaN or infinity; a rate that cannot be computed is null.
  if (!std::isfinite(value)) return add_raw(key, "null");
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", value);
  return add_raw(key, buf);
}

json_object& json_object::add_raw(std::string_view key, std::string_view json) {
  if (text_.size() > 1) text_ += ',';
  text_ += json_quote(key);
  text_ += ':';
  text_ += json;
  return *this;
}

std::string hex_preview(std::string_view bytes, std::size_t max) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  const std::size_t n = bytes.size() < max ? bytes.size() : max;
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (i) out += ' ';
    out += digits[c >> 4];
    out += digits[c & 0xf];
  }
  if (bytes.size() > n) out += " ...";
  return out;
}

std::string base64(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = (static_cast<unsigned char>(bytes[i]) << 16) |
                            (static_cast<unsigned char>(bytes[i + 1]) << 8) | static_cast<unsigned char>(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out += alphabet[(v >> shift) & 0x3f];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += alphabet[(v >> 18) & 0x3f];
    out += alphabet[(v >> 12) & 0x3f];
    out += rest == 2 ? alphabet[(v >> 6) & 0x3f] : '=';
    out += '=';
  }
  return out;
}

}  // namespace ipcbus::cli
