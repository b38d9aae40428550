#include "bridge_wire.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ipcbus/frame_codec.hpp"

namespace ipcbus::bridge {

namespace {

std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

char* put_varint(char* out, std::uint64_t v) {
  for (; v >= 0x80; v >>= 7) *out++ = static_cast<char>(v | 0x80);
  *out++ = static_cast<char>(v);
  return out;
}

// Protobuf tags (field number << 3 | wire type): BridgeRecord.data = 5 and
// BridgeData.frame = 2 are length-delimited (2), BridgeData.topic_id = 1 a varint (0).
constexpr char record_data_tag = (5 << 3) | 2;
constexpr char data_topic_id_tag = (1 << 3) | 0;
constexpr char data_frame_tag = (2 << 3) | 2;

}  // namespace

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

// The shape append_data_record writes, read without protobuf's general parser
// (which costs more than the rest of a small frame's trip through the
// bridge). Anything else, however valid (fields in another order, unknown
// fields, a varint over 32 bits), is left to
// ParseFromArray: false, and `out` untouched.
bool record_reader::read_data_record(std::string_view body, BridgeRecord& out) {
  // Each varint here is a 32-bit one, as a length prefix is.
  const auto take_varint = [&](std::uint32_t& value) {
    std::size_t used = 0;
    if (read_length_prefix(body, value, used) != prefix_status::complete) return false;
    body.remove_prefix(used);
    return true;
  };
  std::uint32_t data_bytes = 0, topic_id = 0, frame_bytes = 0;
  if (body.empty() || body[0] != record_data_tag) return false;
  body.remove_prefix(1);
  if (!take_varint(data_bytes) || data_bytes != body.size()) return false;
  if (!body.empty() && body[0] == data_topic_id_tag) {
    body.remove_prefix(1);
    if (!take_varint(topic_id)) return false;
  }
  if (body.empty() || body[0] != data_frame_tag) return false;
  body.remove_prefix(1);
  if (!take_varint(frame_bytes) || frame_bytes != body.size()) return false;
  // The oneof's message is kept from record to record when it was data too.
  if (!out.has_data()) out.Clear();
  BridgeData* data = out.mutable_data();
  data->set_topic_id(topic_id);
  data->mutable_frame()->assign(body.data(), body.size());
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
  const std::string_view body = rest.substr(prefix, length);
  if (!read_data_record(body, out) && !out.ParseFromArray(body.data(), static_cast<int>(body.size())))
    return fail("record does not parse as ipcbus.BridgeRecord");
  consumed_ += prefix + length;
  if (consumed_ == buffer_.size()) {
    buffer_.clear();  // keeps capacity for the next reads
    consumed_ = 0;
  }
  return true;
}

std::string make_nonce() {
  std::string nonce(nonce_size, '\0');
  std::size_t got = 0;
  while (got < nonce.size()) {
    const ssize_t n = ::getrandom(nonce.data() + got, nonce.size() - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      std::random_device rd;  // no getrandom (old kernel): libstdc++ reads /dev/urandom
      for (; got < nonce.size(); ++got) nonce[got] = static_cast<char>(rd() & 0xff);
    }
  }
  return nonce;
}

std::string auth_proof(std::string_view token, std::string_view nonce, std::uint64_t bus_id) {
  std::string message(nonce);
  for (int i = 0; i < 8; ++i) message.push_back(static_cast<char>((bus_id >> (8 * i)) & 0xff));
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len))
    throw std::runtime_error("HMAC-SHA256 failed");
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool proof_matches(std::string_view expected, std::string_view received) {
  if (expected.empty() || expected.size() != received.size()) return false;  // the length is no secret
  return CRYPTO_memcmp(expected.data(), received.data(), expected.size()) == 0;
}

std::string printable(std::string_view text, std::size_t max) {
  static constexpr char hex[] = "0123456789abcdef";
  constexpr std::string_view cut = "...";
  // Never more than needed for the bound, however long the peer's text.
  const std::string_view head = text.substr(0, max + 1);
  std::string out;
  std::size_t fits = 0;  // out's length with room for the marker after it
  for (const char ch : head) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c > 0x7e || c == '\\') {
      out += '\\';
      out += 'x';
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += ch;
    }
    if (out.size() + cut.size() <= max) fits = out.size();
  }
  if (out.size() <= max && head.size() == text.size()) return out;
  out.resize(fits);
  if (max >= cut.size()) out += cut;
  return out;
}

bool append_data_record(std::uint32_t topic_id, const frame_header& header, std::string_view payload,
                        std::string& out) {
  const std::size_t frame_bytes = frame_size(header, payload.size());
  // proto3 leaves a field at its default (topic id 0) out.
  const std::size_t data_bytes =
      (topic_id ? 1 + varint_size(topic_id) : 0) + 1 + delimited_size(frame_bytes);
  const std::size_t record_bytes = 1 + varint_size(data_bytes) + data_bytes;
  // Protobuf parses at most 2 GiB - 1 as one message.
  if (record_bytes > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) return false;
  const std::size_t at = out.size();
  out.resize(at + varint_size(record_bytes) + record_bytes);
  char* p = put_varint(out.data() + at, record_bytes);
  *p++ = record_data_tag;
  p = put_varint(p, data_bytes);
  if (topic_id) {
    *p++ = data_topic_id_tag;
    p = put_varint(p, topic_id);
  }
  *p++ = data_frame_tag;
  // The frame's own length prefix is the field's length.
  p = encode_delimited_frame_header(p, header, payload.size(), frame_bytes);
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  return true;
}

void append_record(const BridgeRecord& record, std::string& out) {
  const std::size_t size = record.ByteSizeLong();
  const std::size_t at = out.size();
  out.resize(at + varint_size(size) + size);
  char* body = put_varint(out.data() + at, size);
  record.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(body));
}

}  // namespace ipcbus::bridge
