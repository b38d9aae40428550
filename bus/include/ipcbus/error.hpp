// ipcbus::errc and its error_category: every failure the bus reports.
//
// Thread-safety: everything here is immutable and safe from any thread.
// Sync calls come in pairs, Asio style: one throws std::system_error, the other
// takes a std::error_code& and never throws for these conditions.
#pragma once

#include <string>
#include <system_error>

namespace ipcbus {

enum class errc {
  closed = 1,          // the publisher/subscriber/bus was shut down
  timed_out,           // a reliable publish or a receive ran out of time
  would_block,         // a non-blocking call could not make progress
  message_too_large,   // over the topic's max_message, or a frame over the limit
  peer_gone,           // the other side died or closed
  access_denied,       // a peer's uid/gid is not allowed, or a file mode refuses us
  invalid_topic,       // a topic or pattern breaks the naming rules
  config_error,        // configuration file or value is wrong
  malformed_frame,     // bytes on the wire that are not a valid frame
  type_mismatch,       // a topic carries a different protobuf type than expected
  unknown_transport,   // no transport registered for a URI scheme
  invalid_argument,    // any other argument that cannot be accepted
};

const std::error_category& bus_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), bus_category()};
}

// Throws std::system_error(ec, what) when ec is set. Used by the throwing overloads.
void throw_if(const std::error_code& ec, const std::string& what);

}  // namespace ipcbus

template <>
struct std::is_error_code_enum<ipcbus::errc> : std::true_type {};
