// The ZeroMQ peers: zmq-ipc (ipc:// in the run's scratch directory) and zmq-tcp
// (tcp:// on 127.0.0.1), with libzmq's C API.
//
// Ping-pong uses a PAIR socket on each side. Fan-out uses XPUB/SUB: the
// publisher waits until it has seen every subscription (so no message is sent
// before a subscriber listens), and both high-water marks are off, so ZeroMQ,
// like the bus under `reliable`, delivers every message. Contexts and sockets
// exist only in the children. Without libzmq (IPCBUS_HAVE_ZMQ unset) the
// factories return nullptr.
//
// zmq-proxy (`ipcbus bench --bridge`) is ZeroMQ in the bridge's topology:
// publisher -ipc-> forwarder -tcp-> forwarder -ipc-> subscriber, four
// processes. A forwarder does what zmq_proxy does with an XSUB and an XPUB
// socket (messages downstream in bursts, subscriptions upstream); it is
// written out here so that it ends once the end marker went through.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "bench_channel.hpp"
#include "bench_process.hpp"

namespace ipcbus::bench {

// Whether this build has libzmq, and its version ("4.3.4"), or why not.
bool zmq_built();
std::string zmq_version();

std::unique_ptr<pair_channel> make_zmq_pair(const std::string& name, const std::filesystem::path& dir);
std::unique_ptr<fanout_channel> make_zmq_fanout(const std::string& name, const std::filesystem::path& dir,
                                                int subscribers);

// One publisher and one subscriber with two forwarders between them (above).
class zmq_relay_chain : public fanout_channel {
 public:
  // Forwarder 0 (ipc in, tcp out) or 1 (tcp in, ipc out), in a child of its
  // own. Returns once it forwarded the end marker; `messages` counts what it
  // forwarded downstream, the end marker included.
  virtual child_report run_forwarder(int index) = 0;
};
std::unique_ptr<zmq_relay_chain> make_zmq_relay_chain(const std::filesystem::path& dir);

}  // namespace ipcbus::bench
