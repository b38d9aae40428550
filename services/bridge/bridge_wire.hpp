// The bridge's byte stream: varint32-delimited ipcbus.BridgeRecord messages
// (proto/ipcbus/control.proto), the same framing frames use on byte streams.
//
// record_reader takes bytes as they arrive and hands out whole records. It
// checks every length prefix against a limit BEFORE it keeps any bytes for the
// record, so a peer cannot make it allocate more than limit + one read; a bad
// prefix, an oversized record or one that does not parse is an error that says
// why, and the link is then closed.
//
// Thread-safety: none; one reader per connection, used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ipcbus/control.pb.h"
#include "ipcbus/frame_codec.hpp"

namespace ipcbus::bridge {

// 2: the hello carries a nonce instead of the token, and a BridgeAuth follows.
inline constexpr std::uint32_t protocol_version = 2;
inline constexpr std::size_t nonce_size = 32;

class record_reader {
 public:
  explicit record_reader(std::size_t max_record) : max_record_(max_record) {}
  // A smaller limit for the time before the hello, larger after it.
  void set_limit(std::size_t max_record) { max_record_ = max_record; }
  std::size_t limit() const { return max_record_; }

  // Appends received bytes. False (and error() says why) when the stream
  // cannot be valid: the caller closes the connection. Keeps at most the
  // limit plus the varint prefix plus what one call adds.
  bool feed(std::string_view bytes);
  // The next whole record into `out` (reused: parse into the same message to
  // keep its buffers). False when none is complete yet, or on error (error()
  // is then set).
  bool next(BridgeRecord& out);
  const std::string& error() const { return error_; }
  // Bytes held for a record not yet complete.
  std::size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  bool fail(std::string why);
  static bool read_data_record(std::string_view body, BridgeRecord& out);
  std::size_t max_record_;
  std::string buffer_;
  std::size_t consumed_ = 0;
  std::string error_;
};

// nonce_size random bytes from the kernel (getrandom, i.e. /dev/urandom's pool).
std::string make_nonce();
// HMAC-SHA256(token, nonce || bus_id as 8 bytes little-endian): what a side
// sends to prove it knows the token, `nonce` being the other side's.
std::string auth_proof(std::string_view token, std::string_view nonce, std::uint64_t bus_id);
// Compares a received proof with the expected one in constant time (CRYPTO_memcmp).
bool proof_matches(std::string_view expected, std::string_view received);

// Text a peer sent (its name, a refusal's reason, a topic), made fit for logs
// and stats: every byte outside printable ASCII becomes \xNN (no terminal
// escapes, no line breaks, nothing that is not valid UTF-8 in a proto3
// string), and the result is at most `max` bytes, ending in "..." if cut.
std::string printable(std::string_view text, std::size_t max = 200);

// Appends the varint32 length and `record` to `out`.
void append_record(const BridgeRecord& record, std::string& out);

// Appends a data record, BridgeRecord{data: {topic_id, frame}}, for the frame
// `header` + `payload`, encoded straight into `out`: the bytes append_record
// would write for that message, without building it (the frame is not copied
// into a message and then out of it again: two copies and an allocation per
// frame on the bridge's hottest path). False, with `out` unchanged, when the
// record would exceed what a varint32 length can say.
bool append_data_record(std::uint32_t topic_id, const frame_header& header, std::string_view payload,
                        std::string& out);

}  // namespace ipcbus::bridge
