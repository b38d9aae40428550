// ipcbus::bridge::bridge — carries topics between this bus and peer buses over TCP.
//
// It joins the local bus (a Bus with its own io thread), listens for peers
// and/or dials them, and keeps one link per peer bus. Each side tells the
// other which patterns it wants (interest): its local subscribers' and those
// its other peers declared to it, never a peer's own back to that peer. A
// bridge subscribes to a local topic only while the topic is exported and some
// peer is interested, and sends what entered the bus here to those peers. The
// receiving bridge republishes a frame through a publisher of its own (one
// per topic, shared by the links that bring it and lingering after them, so
// a cut link that comes back shows its losses as a gap; see republisher),
// keeping the origin and counting the hop, and passes it on to its other interested
// peers (transit), never back to the link it came by. Every frame keeps its
// origin bus, origin publisher and sequence: a copy that arrives by a second
// path is dropped (duplicate_filter; only passed on when it came by fewer hops
// than any before it), one that comes back to its origin bus too, and the hop
// limit ends whatever goes round a cycle of links.
//
// Thread-safety: construct, start() and stop() on the thread that runs `io`;
// everything runs on that thread except subscriber callbacks (the bus's thread).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bridge_link.hpp"
#include "duplicate_filter.hpp"
#include "republish_worker.hpp"
#include "ipcbus/bus.hpp"
#include "ipcbus/detail/subscriber_core.hpp"
#include "ipcbus/registry.hpp"

namespace ipcbus::bridge {

struct bridge_options {
  std::string listen;                 // tcp://HOST:PORT; empty: do not listen
  std::vector<std::string> peers;     // tcp://HOST:PORT to dial
  std::vector<std::string> exports;   // patterns of local topics offered to peers
  std::string token;                  // shared secret; both sides must have the same
  std::string tls_cert, tls_key, tls_ca;  // all three, or none (plain TCP)
  std::chrono::milliseconds backoff_min{100}, backoff_max{2000};
  std::chrono::milliseconds rescan{200};  // registry poll, besides inotify
  std::uint32_t max_hops = 4;
  std::size_t max_links = 64;         // established links at once
  // Accepted connections still in their handshake: at most this many, and at
  // most max_handshakes_per_source from one address, so that idle connections
  // cannot keep real peers out (see accept()).
  std::size_t max_handshakes = 16;
  std::size_t max_handshakes_per_source = 4;
  std::size_t max_topics_per_link = 1024;
  link_limits limits;
  republish_worker::limits republish;  // received, not yet republished, per link
  // How long a topic's republisher outlives the last link that brought the
  // topic, so that a link that comes back continues it. 0: derived from the
  // limits above (see bridge::republisher_linger).
  std::chrono::milliseconds republisher_linger{0};
};

class bridge {
 public:
  bridge(boost::asio::io_context& io, Bus& bus, bridge_options options);
  ~bridge();
  // Sets up TLS, the listener, the registry entry and starts dialing.
  // Errors: invalid_argument (a bad URI, TLS files), or the socket's error; `why` says which.
  void start(std::error_code& ec, std::string& why);
  // Closes every link, subscription and republishing publisher.
  void stop();
  // A graceful stop (SIGTERM): takes no new peers and no new local frames,
  // lets every link write what it has queued and its peer close, lets the
  // republish workers finish, then stop()s and calls `done` — at the latest
  // after `limit`; what is left then is dropped and counted. A second call
  // stops at once.
  void drain(std::chrono::milliseconds limit, std::function<void()> done);
  // New export patterns (SIGHUP). False, with `why`, for a bad pattern: the
  // old ones stay.
  bool set_exports(std::vector<std::string> exports, std::string& why);
  // The port actually listened on (for tcp://...:0).
  unsigned short listen_port() const;
  // How long a republisher no link uses is kept (options.republisher_linger,
  // else derived from the link limits).
  std::chrono::milliseconds republisher_linger() const;

 private:
  struct dialer {
    std::string uri;
    boost::asio::ip::tcp::endpoint endpoint;
    std::unique_ptr<boost::asio::steady_timer> timer;
    std::chrono::milliseconds backoff{0};
    std::shared_ptr<link> current;
    std::shared_ptr<link_counters> counters = std::make_shared<link_counters>();
    std::uint64_t peer_bus = 0;  // learned from the last hello; 0: unknown
    std::string peer_name;
    std::string state = "connecting";
    std::string last_error;
    bool was_up = false;
  };
  // A peer that dialed us, by its bus id: its counters outlive each connection.
  struct accepted_peer {
    std::shared_ptr<link_counters> counters = std::make_shared<link_counters>();
    std::string address;  // where it came from last
    std::string name;
    std::string last_error;
    bool was_up = false;
  };
  // A local topic being forwarded: the subscription and the links that want it.
  //
  // The subscription's handler runs on the bus's io thread, which serves
  // every other subscription of the bridge too: it never waits. A reliable
  // frame that finds a link's queue full is held here instead, and the
  // subscription paused, so the local publisher feels the backpressure through
  // its own queue (as with any slow subscriber) while the other topics flow
  // on. The link calls back when it has room (or closed): the held frames go
  // out in order, then the subscription resumes.
  struct route : std::enable_shared_from_this<route> {
    topic_info info;
    boost::asio::io_context* bus_io = nullptr;  // the bus's io thread: the handler's and forward_held's
    std::mutex mutex;
    std::vector<std::shared_ptr<link>> links;  // guarded by mutex
    std::shared_ptr<detail::subscriber_core> subscription;  // set under mutex, once
    // When the subscription last handed over a frame (steady clock, ns): a
    // drain keeps reading until the local bus has gone quiet.
    std::atomic<std::int64_t> last_frame_ns{0};
    // Bus io thread only: frames some link could not take yet, oldest first,
    // each with the links still owed it. While any is held, every new frame
    // queues behind them (order per link is kept) and the subscription is paused.
    struct held_frame {
      std::string bytes;  // the delimited frame
      std::vector<std::shared_ptr<link>> owed;
    };
    std::deque<held_frame> held;
    std::atomic<std::size_t> held_count{0};  // held.size(), for a drain on the bridge's io thread
    ~route();  // what is still held never goes out: counted as dropped on the links owed it
    // Bus io thread: one frame from the local subscription.
    void forward(const frame_view& f);
    // Bus io thread: hands on the held frames the links can take now;
    // resumes the subscription once none is left.
    void forward_held();
    void set_paused(bool paused);
    // What a full link calls when it has room: posts forward_held to the bus
    // io thread. Made once (start()), not per frame.
    std::function<void()> on_room;
    void start(boost::asio::io_context& io);
  };

  void accept();
  // Whether an accepted connection from `source` may start its handshake:
  // makes room by closing the oldest silent handshake if need be.
  bool admit(const boost::asio::ip::address& source, const std::string& peer);
  void dial(dialer& d);
  void retry_later(dialer& d);
  std::shared_ptr<link> make_link(boost::asio::ip::tcp::socket socket, bool dialed, const std::string& peer,
                                  std::shared_ptr<link_counters> counters);
  std::string check_hello(link& l, const BridgeHello& hello);
  void on_up(const std::shared_ptr<link>& l);
  void on_record(const std::shared_ptr<link>& l, BridgeRecord& r);
  void on_closed(const std::shared_ptr<link>& l);
  void on_topic(link& l, const BridgeTopic& t);
  void on_data(link& l, BridgeData& d);
  republish_worker& worker_for(link& l);
  // Hands the link's republish worker its publishers to close, off this thread.
  void retire_worker(link& l, std::chrono::milliseconds drain, bool drop_queued);
  void reap_workers();
  // Reads the registry: our interest, and which local topics to forward to whom.
  void rescan();
  void update_routes(const std::vector<participant_record>& participants);
  void arm_rescan();
  // Drain, first phase: keeps the local subscriptions reading until they have
  // handed over nothing for a moment, so what the local bus already published
  // to us is carried too; then closes them and finishes the links.
  void check_taken_in();
  void finish_links();
  void check_drained();
  void publish_status();
  // What we declare to `to`: our local subscribers' patterns (0 hops) and
  // those our other peers declared to us, one hop more, below the hop limit.
  std::vector<std::pair<std::string, std::uint32_t>> interest_for(const link& to) const;
  // Sends each link that is up the interest it should have now, if that changed.
  void declare_interest();
  // The links a frame received from `from` on topic `in` is passed on to.
  const std::vector<std::shared_ptr<link>>& onward_links(link& from, link::inbound_topic& in);
  std::size_t local_subscribers_for(const std::string& topic) const;
  // A topic republished here. One publisher per topic, shared by every link
  // that brings the topic and outliving them for a while: a link that is cut
  // and comes back (or a peer bridge that restarts, or a second link with the
  // same topic) republishes through the same publisher, so local subscribers
  // see the same publisher id and what was lost meanwhile as a gap in its
  // sequence (the duplicate filter's `lost`), not a new publisher.
  struct republisher {
    std::shared_ptr<detail::publisher_core> publisher;
    // Every link's worker republishes through it in the order the io thread
    // received the frames (republish_order.hpp).
    std::shared_ptr<republish_order> order;
    std::string type_name;  // as the first link announced it: another type is refused
    std::shared_ptr<const topic_info> onward_info;
    std::size_t links = 0;  // inbound topics of links that use it now
    std::chrono::steady_clock::time_point idle_since;  // when `links` fell to 0
  };
  // Io thread: a link no longer uses the topic's republisher.
  void release_republisher(const std::string& topic);
  // Io thread: closes the republishers no link has used for the linger (all
  // unused ones with `at_once`), off this thread. One a retiring worker still
  // republishes through is kept until it is done.
  void close_idle_republishers(bool at_once);

  boost::asio::io_context& io_;
  Bus& bus_;
  bridge_options options_;
  std::uint64_t bus_id_;
  BridgeHello hello_;
  boost::asio::ssl::context tls_context_;
  bool tls_ = false;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::vector<std::unique_ptr<dialer>> dialers_;
  std::map<std::uint64_t, accepted_peer> accepted_;
  std::vector<std::shared_ptr<link>> links_;  // handshaking and up
  // Workers of closed links, still republishing or closing their publishers.
  std::vector<std::shared_ptr<republish_worker>> retiring_;
  std::vector<std::string> interest_;         // what our local subscribers listen to
  std::vector<participant_record> last_listing_;
  std::map<std::string, std::shared_ptr<route>> routes_;
  std::map<std::string, republisher> republishers_;  // by topic
  std::unique_ptr<directory_watcher> watcher_;
  boost::asio::steady_timer rescan_timer_;
  bool rescan_posted_ = false;
  std::unique_ptr<registration> registration_;
  Participant entry_;
  std::string last_status_;
  std::chrono::steady_clock::time_point last_status_time_;
  std::uint64_t refused_ = 0, bad_records_ = 0, interest_cut_ = 0;
  std::uint64_t duplicates_ = 0, hop_limit_ = 0, returned_ = 0;
  duplicate_filter seen_;
  // Moves on whenever links, interest or exports change: each inbound topic's
  // onward links are recomputed at its next frame.
  std::uint64_t routing_generation_ = 1;
  bool stopped_ = false;
  bool draining_ = false;
  std::chrono::steady_clock::time_point drain_deadline_;
  std::chrono::steady_clock::time_point take_in_deadline_;
  std::function<void()> drained_;
  boost::asio::steady_timer drain_timer_;
};

// Parses "tcp://HOST:PORT" (HOST a name or an address; [v6] in brackets).
std::optional<std::pair<std::string, unsigned short>> parse_tcp_uri(const std::string& uri);

}  // namespace ipcbus::bridge
