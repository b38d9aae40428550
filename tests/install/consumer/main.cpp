// A downstream program built against an installed ipcbus: one Bytes message
// round trip over the unix transport, on a private runtime directory.
//
//   ipcbus_consumer RUNTIME_DIR     exits 0 when the received bytes match what was sent
#include <chrono>
#include <exception>
#include <iostream>
#include <string>

#include <ipcbus/bus.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " RUNTIME_DIR\n";
    return 2;
  }
  try {
    ipcbus::bus_options options;
    options.cfg = ipcbus::parse_config(std::string("runtime_dir: ") + argv[1] +
                                       "\ndefaults: { transport: unix }\n");
    ipcbus::Bus bus(options);

    const std::string sent = "hello from a downstream project";
    auto pub = bus.advertise<ipcbus::Bytes>("install/check");
    auto sub = bus.subscribe<ipcbus::Bytes>("install/check");
    if (!pub.wait_for_subscribers(1, std::chrono::seconds(5))) {
      std::cerr << "consumer: the subscriber did not attach within 5 s\n";
      return 1;
    }
    pub.publish(ipcbus::Bytes(sent));
    auto received = sub.receive(std::chrono::seconds(5));
    if (!received) {
      std::cerr << "consumer: nothing received within 5 s\n";
      return 1;
    }
    if (received->message.bytes() != sent) {
      std::cerr << "consumer: received '" << received->message.bytes() << "', expected '" << sent
                << "'\n";
      return 1;
    }
    std::cout << "consumer: ok, received '" << received->message.bytes() << "' on "
              << received->info.transport << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "consumer: " << e.what() << "\n";
    return 1;
  }
}
