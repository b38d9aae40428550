// The ZeroMQ peers: zmq-ipc (ipc:// in the run's scratch directory) and zmq-tcp
// (tcp:// on 127.0.0.1), with libzmq's C API.
//
// Ping-pong uses a PAIR socket on each side. Fan-out uses XPUB/SUB: the
// publisher waits until it has seen every subscription (so no message is sent
// before a subscriber listens), and both high-water marks are off, so ZeroMQ,
// like the bus under `reliable`, delivers every message. Contexts and sockets
// exist only in the children. Without libzmq (IPCBUS_HAVE_ZMQ unset) the
// factories return nullptr.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "bench_channel.hpp"

namespace ipcbus::bench {

// Whether this build has libzmq, and its version ("4.3.4"), or why not.
bool zmq_built();
std::string zmq_version();

std::unique_ptr<pair_channel> make_zmq_pair(const std::string& name, const std::filesystem::path& dir);
std::unique_ptr<fanout_channel> make_zmq_fanout(const std::string& name, const std::filesystem::path& dir,
                                                int subscribers);

}  // namespace ipcbus::bench
