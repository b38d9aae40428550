// The raw baselines: the bare mechanism under each ipcbus transport, with no bus.
//
//   raw-spin   a shared-memory ring, the receiver busy-polls
//   raw-futex  the same ring, the receiver sleeps on a futex word
//   raw-unix   socketpair(AF_UNIX, SOCK_STREAM), one per direction or subscriber
//   raw-tcp    loopback TCP with TCP_NODELAY
//   raw-pipe   a pipe per direction or subscriber
//   raw-mq     a POSIX message queue (mq_open) per direction or subscriber
//
// Everything is created in the parent before fork and inherited; names (mq) are
// unlinked at once, so a killed run leaves nothing behind. A fan-out publisher
// writes each message to every subscriber's socket, pipe or queue in turn, as
// the bus's stream transports do; the shared ring is written once for all.
#pragma once

#include <memory>
#include <string>

#include "bench_channel.hpp"

namespace ipcbus::bench {

// nullptr with `why` set when this mechanism cannot carry messages of `size`
// here (raw-mq above the queue size limit). Throws std::system_error on failure.
std::unique_ptr<pair_channel> make_raw_pair(const std::string& name, std::size_t size, std::string& why);
std::unique_ptr<fanout_channel> make_raw_fanout(const std::string& name, std::size_t size, int subscribers,
                                                std::string& why);

}  // namespace ipcbus::bench
