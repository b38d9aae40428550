#include "ipcbus/error.hpp"

namespace ipcbus {
namespace {

class bus_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ipcbus"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::closed: return "closed";
      case errc::timed_out: return "timed out";
      case errc::would_block: return "operation would block";
      case errc::message_too_large: return "message too large";
      case errc::peer_gone: return "peer gone";
      case errc::access_denied: return "access denied";
      case errc::invalid_topic: return "invalid topic name";
      case errc::config_error: return "configuration error";
      case errc::malformed_frame: return "malformed frame";
      case errc::type_mismatch: return "message type mismatch";
      case errc::unknown_transport: return "unknown transport";
      case errc::invalid_argument: return "invalid argument";
    }
    return "unknown ipcbus error";
  }
};

}  // namespace

const std::error_category& bus_category() noexcept {
  static const bus_category_impl instance;
  return instance;
}

void throw_if(const std::error_code& ec, const std::string& what) {
  if (ec) throw std::system_error(ec, what);
}

}  // namespace ipcbus
