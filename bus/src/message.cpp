#include "ipcbus/message.hpp"

namespace ipcbus {

std::chrono::nanoseconds MessageInfo::age() const {
  // publish_time_ns is CLOCK_REALTIME so that it means the same in every process.
  const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return now - std::chrono::nanoseconds(publish_time_ns);
}

}  // namespace ipcbus
