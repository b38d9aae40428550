// The README example, compiled in every build. No config needed: unix sockets, runtime dir $IPCBUS_RUNTIME_DIR or /tmp.
#include <atomic>
#include <iostream>
#include <thread>
#include "demo.pb.h"
#include "ipcbus/bus.hpp"
int main() {
  ipcbus::Bus bus;
  std::atomic<int> received{0};
  auto sub = bus.subscribe<ipcbus::demo::Reading>("hello/world", [&](const auto& reading, const ipcbus::MessageInfo& info) {
    std::cout << info.topic << " #" << info.sequence << ": " << reading.value() << std::endl;
    ++received;
  });
  auto pub = bus.advertise<ipcbus::demo::Reading>("hello/world");
  if (!pub.wait_for_subscribers(1, std::chrono::seconds(5))) return 1;  // discovery takes a moment
  ipcbus::demo::Reading reading;
  for (int i = 1; i <= 3; ++i) { reading.set_value(i * 0.5); pub.publish(reading); }
  for (int i = 0; i < 500 && received < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return received == 3 ? 0 : 1;  // delivery is asynchronous: wait for it before the Bus goes
}
