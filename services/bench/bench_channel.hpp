// The workloads every non-bus candidate runs (raw mechanisms, ZeroMQ), written
// once over a minimal message channel.
//
// A channel is made in the parent before fork (it creates the pipes, sockets,
// shared rings or names) and opened in each child. Every message has the size of
// the case; its first byte says whether it is data ('D') or the end of a
// throughput run ('E'). Send and receive block; the parent's deadline bounds
// them (a child stuck on a dead peer is killed). Errors throw std::system_error.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <utility>

#include "bench_process.hpp"

namespace ipcbus::bench {

class channel_sender {
 public:
  virtual ~channel_sender() = default;
  // Sends one message of n bytes (to every subscriber of a fan-out channel).
  virtual void send(const char* data, std::size_t n) = 0;
};

class channel_receiver {
 public:
  virtual ~channel_receiver() = default;
  // Receives the next message into data; every message has the case's size n.
  virtual void receive(char* data, std::size_t n) = 0;
};

struct channel_ends {
  std::unique_ptr<channel_sender> tx;
  std::unique_ptr<channel_receiver> rx;
};

// Two processes, each sending to the other. side 0 pings, side 1 pongs.
class pair_channel {
 public:
  virtual ~pair_channel() = default;
  virtual channel_ends open(int side) = 0;
};

// One publisher, `subscribers` receivers that each get every message.
class fanout_channel {
 public:
  virtual ~fanout_channel() = default;
  virtual std::unique_ptr<channel_sender> open_publisher() = 0;
  virtual std::unique_ptr<channel_receiver> open_subscriber(int index) = 0;
};

struct pingpong_plan {
  std::size_t size = 64;
  int warmup = 100;
  int count = 1000;  // measured round trips
};

struct throughput_plan {
  std::size_t size = 64;
  int subscribers = 1;
  std::chrono::milliseconds duration{500};  // how long the publisher publishes
};

// Child bodies. The ping side reports one-way samples (round trip / 2).
child_report run_channel_ping(pair_channel& c, const pingpong_plan& plan);
child_report run_channel_pong(pair_channel& c, const pingpong_plan& plan);
// The publisher sends for plan.duration, then one end message.
child_report run_channel_publisher(fanout_channel& c, const throughput_plan& plan);
// A subscriber counts data messages until the end message.
child_report run_channel_subscriber(fanout_channel& c, int index, const throughput_plan& plan);

}  // namespace ipcbus::bench
