// One TCP connection between two ipcbus-bridge processes (optionally TLS).
//
// A link says hello (version, bus id, a fresh nonce; never the token), then
// proves it knows the token with an HMAC over the peer's nonce: the dialer
// first, the accepting side only once the dialer's proof checked out. It then
// asks the bridge (duplicates, itself) and carries records both ways: interest, topic
// announcements, data and pings. Outgoing records wait in a bounded queue
// that the topic's QoS governs (see push_data); the writer sends everything
// queued in one write (batching), on a socket with TCP_NODELAY.
//
// Thread-safety: push_data() and counters from any thread (the bus's io thread
// calls them from subscriber callbacks); everything else on the bridge's io thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bridge_wire.hpp"
#include "ipcbus/config.hpp"
#include "ipcbus/detail/publisher_core.hpp"
#include "republish_order.hpp"

namespace ipcbus::bridge {

class republish_worker;

// Counters of one peer; a dialer keeps the same ones across reconnects.
struct link_counters {
  std::atomic<std::uint64_t> sent{0}, received{0}, dropped{0}, reconnects{0};
  std::atomic<std::uint64_t> bytes_sent{0}, bytes_received{0};
};

// What a local topic is forwarded as: filled from the publisher's registry entry.
struct topic_info {
  std::string topic;
  std::string type_name;
  google::protobuf::FileDescriptorSet descriptors;
  qos_policy qos = qos_policy::reliable;
  std::chrono::milliseconds timeout{1000};  // how long a reliable frame waits for queue room
};

struct link_limits {
  std::size_t queue_bytes = 8u << 20;     // queued for the peer, data and control
  std::size_t queue_records = 4096;
  std::size_t max_record = 64u << 20;     // after the hello
  std::size_t hello_record = 4096;        // before it: a stranger gets no more
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds timeout{3000};  // nothing heard for this long: the link is dead
  // A peer that still talks but takes in nothing of what we write for this
  // long is given up. Far longer than `timeout`: a receiving bridge stops
  // reading on purpose while its local subscribers are slow (backpressure),
  // and answers pings meanwhile; a dead peer is caught by `timeout` anyway.
  std::chrono::milliseconds write_stall{30000};
  // From the connect until the peer's proof checked out: a connection that
  // does not get there holds a handshake slot no longer.
  std::chrono::milliseconds handshake_timeout{2000};
};

using tls_stream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

class link : public std::enable_shared_from_this<link> {
 public:
  struct hooks {
    // The peer's hello, once its version and proof of the token checked out:
    // an empty string accepts it, else the reason to refuse.
    std::function<std::string(link&, const BridgeHello&)> check_hello;
    std::function<void(const std::shared_ptr<link>&)> on_up;
    std::function<void(const std::shared_ptr<link>&, BridgeRecord&)> on_record;
    std::function<void(const std::shared_ptr<link>&)> on_closed;
  };
  enum class state { handshaking, up, closed };

  // `tls` false: the stream's TCP socket is used as it is.
  link(boost::asio::io_context& io, tls_stream stream, bool tls, bool dialed, std::string peer,
       BridgeHello own_hello, std::string token, link_limits limits, std::shared_ptr<link_counters> counters, hooks h);
  ~link();

  void start();
  // Closes at once; on_closed runs later on the io thread. Idempotent.
  void close(const std::string& why);
  // Sends a refusal with `why`, then closes.
  void refuse(const std::string& why);
  // The bridge is stopping: takes no more frames or control records, writes
  // what is queued, then half-closes (FIN) so that the peer reads all of it
  // and closes its side; reading goes on until then. Io thread.
  void finish();
  // Queues a control record (hello, proof, refusal, interest): never dropped.
  // An interest record replaces one still queued (only the latest set
  // matters), so the control records queued stay bounded.
  void push_control(const BridgeRecord& record);

  enum class push_result { queued, dropped, closed, full };
  // Queues one frame of `t` (announcing the topic first on this link). When the
  // queue is full: reliable waits up to t.timeout for room, then drops;
  // drop_newest drops this frame; drop_oldest drops the oldest queued frame.
  // Every drop is counted. Blocks only for reliable topics. Any thread.
  push_result push_data(const topic_info& t, const frame_view& frame);
  // As push_data, but never waits: a reliable frame that finds the queue full
  // is not queued and not counted (push_result::full); instead `on_room` is
  // called once, on whichever thread makes room (or closes the link), without
  // the link's lock held. One waiter per `key` (a later one replaces it). For
  // callers that must not block: the bridge's local subscriptions, on the
  // bus's io thread. Any thread.
  push_result try_push_data(const topic_info& t, const frame_view& frame, const void* key,
                            const std::function<void()>& on_room);

  state current_state() const { return state_.load(); }
  bool dialed() const { return dialed_; }
  const std::string& peer() const { return peer_; }
  // From the peer's hello (valid once up).
  std::uint64_t peer_bus() const { return peer_bus_; }
  const std::string& peer_name() const { return peer_name_; }
  const std::string& close_reason() const { return close_reason_; }
  // The peer sent bytes that are not records (or too large ones).
  bool malformed() const { return malformed_; }
  bool was_up() const { return was_up_; }
  // Io thread: the peer has sent at least one byte.
  bool heard() const { return heard_; }
  std::chrono::steady_clock::time_point started() const { return started_; }
  // The address an accepted connection came from (set by the bridge).
  boost::asio::ip::address source;
  // This side refused the peer during the handshake (version, token, duplicate, ...).
  bool refused_handshake() const { return refused_handshake_; }
  link_counters& counters() { return *counters_; }
  const std::shared_ptr<link_counters>& shared_counters() const { return counters_; }
  // Io thread, before the link is up: count into `kept` from now on (the
  // accepting side keeps one set per peer bus across reconnects).
  void adopt_counters(std::shared_ptr<link_counters> kept);
  bool interest_cut_logged = false;  // io thread: the peer sent more patterns than we take
  std::size_t queued_bytes() const;

  // Io thread: the peer's interest (patterns, and how many bridges passed
  // each on), what we last declared to it, and the topics it announced to us.
  std::vector<std::string> peer_interest;
  std::vector<std::uint32_t> peer_interest_hops;
  std::vector<std::pair<std::string, std::uint32_t>> declared_interest;
  struct inbound_topic {
    std::string topic;
    // The bridge's republisher of the topic, shared with other links (see
    // bridge::republisher). Null: refused, frames are counted as dropped.
    std::shared_ptr<detail::publisher_core> publisher;
    std::shared_ptr<republish_order> order;  // the republisher's (republish_order.hpp)
    // What the topic is passed on as to our other peers (transit), and to
    // which of them: recomputed when the bridge's routing generation moved on.
    std::shared_ptr<const topic_info> onward_info;
    std::vector<std::shared_ptr<link>> onward;
    std::uint64_t onward_generation = 0;
  };
  std::unordered_map<std::uint32_t, inbound_topic> inbound;
  // Io thread: republishes what this link received (made with its first republisher).
  std::shared_ptr<republish_worker> worker;

  // Io thread. Stops reading from the peer after the records already read
  // (its republish worker is full: TCP then pushes back on the peer), and
  // starts again. While paused, the peer's silence does not count against it.
  void pause_reading() { read_paused_ = true; }
  void resume_reading();

 private:
  struct entry {
    std::string bytes;
    bool data = false;      // may be dropped by a drop policy
    bool interest = false;  // replaced by a newer interest record while queued
  };
  template <class F> void with_stream(F&& f);
  void send_hello();
  void send_proof();
  void read();
  void handle(BridgeRecord& record);
  void kick();  // io thread: write what is queued
  void write_some();  // io thread: the rest of out_
  void schedule_kick();
  void arm_heartbeat();
  bool full() const;  // with mutex_ held
  push_result push(const topic_info& t, const frame_view& frame, const void* key, const std::function<void()>* on_room);
  // With mutex_ held: the waiters to call once the lock is released (room, or closed).
  std::vector<std::function<void()>> take_room_waiters(bool closing);

  boost::asio::io_context& io_;
  tls_stream stream_;
  bool tls_;
  bool dialed_;
  std::string peer_;
  BridgeHello own_hello_;  // with this link's nonce
  std::string token_;
  BridgeHello peer_hello_;
  bool got_hello_ = false;  // handshaking: the peer's hello came, its proof is awaited
  link_limits limits_;
  std::shared_ptr<link_counters> counters_;
  hooks hooks_;
  std::atomic<state> state_{state::handshaking};
  std::uint64_t peer_bus_ = 0;
  std::string peer_name_;
  std::string close_reason_;
  bool close_after_flush_ = false;
  bool finishing_ = false;  // guarded by mutex_ (push_data checks it on other threads)
  bool fin_sent_ = false;   // io thread
  bool malformed_ = false;
  bool was_up_ = false;
  bool refused_handshake_ = false;
  bool heard_ = false;

  bool read_paused_ = false;
  bool read_parked_ = false;  // paused with no read in flight: resume_reading() starts one

  record_reader reader_;
  BridgeRecord record_;  // parsed into again and again
  std::array<char, 64 * 1024> read_buffer_{};
  boost::asio::steady_timer heartbeat_;
  std::chrono::steady_clock::time_point last_heard_;
  std::chrono::steady_clock::time_point started_;

  mutable std::mutex mutex_;  // guards the queue and the topic ids
  std::condition_variable room_;
  std::deque<entry> queue_;
  std::size_t queue_bytes_ = 0;
  std::size_t queue_data_ = 0;  // data entries in queue_
  std::unordered_map<std::string, std::uint32_t> topic_ids_;
  // try_push_data callers waiting for room, by key (guarded by mutex_).
  std::vector<std::pair<const void*, std::function<void()>>> room_waiters_;
  BridgeRecord scratch_;  // encodes data records, under mutex_
  std::atomic<bool> kick_posted_{false};
  bool writing_ = false;  // io thread
  // Io thread, while writing_: when the socket last took bytes. A peer that
  // reads slowly still takes some; one that takes none for limits_.write_stall is given up.
  std::chrono::steady_clock::time_point write_progress_;
  std::string out_;       // the batch being written (io thread)
  std::size_t out_written_ = 0;
  std::uint64_t out_frames_ = 0;  // data frames in out_
};

}  // namespace ipcbus::bridge
