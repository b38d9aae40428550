#include "bridge_wire.hpp"

#include <cstring>

#include "ipcbus/frame_codec.hpp"

namespace ipcbus::bridge {

bool record_reader::fail(std::string why) {
  error_ = std::move(why);
  buffer_ = std::string{};  // nothing more is read from a broken stream: give the memory back
  consumed_ = 0;
  return false;
}

bool record_reader::feed(std::string_view bytes) {
  if (!error_.empty()) return false;
  if (consumed_ > 0) {  // drop what was handed out already, so the buffer does not creep
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  // Check the pending record's prefix before taking more bytes for it: a
  // 4 GiB length must be refused before anything grows towards it.
  if (!buffer_.empty()) {
    std::uint32_t length = 0;
    std::size_t prefix = 0;
    const auto st = read_length_prefix(buffer_, length, prefix);
    if (st == prefix_status::malformed) return fail("malformed record length");
    if (st == prefix_status::complete && length > max_record_)
      return fail("record of " + std::to_string(length) + " bytes is over the limit of " +
                  std::to_string(max_record_));
  }
  buffer_.append(bytes.data(), bytes.size());
  return true;
}

bool record_reader::next(BridgeRecord& out) {
  if (!error_.empty()) return false;
  const std::string_view rest = std::string_view(buffer_).substr(consumed_);
  if (rest.empty()) return false;
  std::uint32_t length = 0;
  std::size_t prefix = 0;
  switch (read_length_prefix(rest, length, prefix)) {
    case prefix_status::malformed: return fail("malformed record length");
    case prefix_status::need_more: return false;
    case prefix_status::complete: break;
  }
  if (length > max_record_)
    return fail("record of " + std::to_string(length) + " bytes is over the limit of " + std::to_string(max_record_));
  if (rest.size() - prefix < length) return false;
  if (!out.ParseFromArray(rest.data() + prefix, static_cast<int>(length)))
    return fail("record does not parse as ipcbus.BridgeRecord");
  consumed_ += prefix + length;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();  // keeps capacity for the next reads
    consumed_ = 0;
  }
  return true;
}

void append_record(const BridgeRecord& record, std::string& out) {
  const std::size_t size = record.ByteSizeLong();
  std::uint8_t prefix[5];
  std::size_t n = 0;
  auto v = static_cast<std::uint32_t>(size);
  while (v >= 0x80) {
    prefix[n++] = static_cast<std::uint8_t>(v | 0x80);
    v >>= 7;
  }
  prefix[n++] = static_cast<std::uint8_t>(v);
  const std::size_t at = out.size();
  out.resize(at + n + size);
  std::memcpy(out.data() + at, prefix, n);
  record.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(out.data() + at + n));
}

}  // namespace ipcbus::bridge
