#include "bridge.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>

#include <boost/asio/post.hpp>
#include <google/protobuf/descriptor.h>

#include "ipcbus/frame_codec.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/topic.hpp"

namespace ipcbus::bridge {

namespace asio = boost::asio;
using asio::ip::tcp;

std::optional<std::pair<std::string, unsigned short>> parse_tcp_uri(const std::string& uri) {
  constexpr std::string_view scheme = "tcp://";
  if (!uri.starts_with(scheme)) return std::nullopt;
  const std::string rest = uri.substr(scheme.size());
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = rest.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) return std::nullopt;
  const unsigned long p = std::stoul(port);
  if (p > 65535) return std::nullopt;
  return std::make_pair(host, static_cast<unsigned short>(p));
}

namespace {

// Resolves a tcp:// URI once, at start: a peer's address is configuration.
std::optional<tcp::endpoint> resolve(asio::io_context& io, const std::string& uri, std::string& why) {
  const auto hp = parse_tcp_uri(uri);
  if (!hp) {
    why = "'" + uri + "' is not tcp://HOST:PORT";
    return std::nullopt;
  }
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(hp->first, ec);
  if (!ec) return tcp::endpoint(address, hp->second);
  tcp::resolver resolver(io);
  const auto results = resolver.resolve(hp->first, std::to_string(hp->second), ec);
  if (ec || results.empty()) {
    why = "cannot resolve '" + hp->first + "': " + ec.message();
    return std::nullopt;
  }
  return results.begin()->endpoint();
}

bool matches_any(const std::vector<std::string>& patterns, const std::string& topic) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const auto& p) { return topic_matches(p, topic); });
}

bool matches_any(const std::vector<std::pair<std::string, std::uint32_t>>& patterns, const std::string& topic) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const auto& p) { return topic_matches(p.first, topic); });
}

BridgeRecord interest_record(const std::vector<std::pair<std::string, std::uint32_t>>& patterns) {
  BridgeRecord r;
  auto* interest = r.mutable_interest();
  for (const auto& [pattern, hops] : patterns) {
    interest->add_patterns(pattern);
    interest->add_hops(hops);
  }
  return r;
}

qos_policy from_proto(Qos q) {
  switch (q) {
    case QOS_DROP_OLDEST: return qos_policy::drop_oldest;
    case QOS_DROP_NEWEST: return qos_policy::drop_newest;
    default: return qos_policy::reliable;
  }
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

}  // namespace

bridge::bridge(asio::io_context& io, Bus& bus, bridge_options options)
    : io_(io),
      bus_(bus),
      options_(std::move(options)),
      bus_id_(bus.state()->host_id),
      tls_context_(asio::ssl::context::tls),
      acceptor_(io),
      rescan_timer_(io),
      drain_timer_(io) {
  hello_.set_version(protocol_version);
  hello_.set_bus_id(bus_id_);
  hello_.set_name(bus.domain() + "@" + bus.state()->host);
}

bridge::~bridge() { stop(); }

unsigned short bridge::listen_port() const {
  boost::system::error_code ec;
  return acceptor_.is_open() ? acceptor_.local_endpoint(ec).port() : 0;
}

void bridge::start(std::error_code& ec, std::string& why) {
  const auto fail = [&](std::string reason) {
    why = std::move(reason);
    ec = make_error_code(errc::invalid_argument);
  };
  for (const auto& p : options_.exports) {
    if (validate_pattern(p, &why)) return fail("export '" + p + "': " + why);
  }
  // A peer hears from an idle link only through its pings: pinging no more
  // often than it gives up would make every idle link flap.
  if (options_.limits.heartbeat >= options_.limits.timeout)
    return fail("the heartbeat (" + std::to_string(options_.limits.heartbeat.count()) +
                " ms) must be shorter than the link timeout (" + std::to_string(options_.limits.timeout.count()) +
                " ms)");
  const int tls_files = !options_.tls_cert.empty() + !options_.tls_key.empty() + !options_.tls_ca.empty();
  if (tls_files != 0 && tls_files != 3) return fail("TLS needs a certificate, its key and a CA file, all three");
  if (tls_files == 3) {
    boost::system::error_code tec;
    tls_context_.set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                             asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    // Both sides show a certificate and both check the other's against the CA.
    tls_context_.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, tec);
    if (!tec) tls_context_.load_verify_file(options_.tls_ca, tec);
    if (tec) return fail("TLS CA file '" + options_.tls_ca + "': " + tec.message());
    tls_context_.use_certificate_chain_file(options_.tls_cert, tec);
    if (tec) return fail("TLS certificate '" + options_.tls_cert + "': " + tec.message());
    tls_context_.use_private_key_file(options_.tls_key, asio::ssl::context::pem, tec);
    if (tec) return fail("TLS key '" + options_.tls_key + "': " + tec.message());
    tls_ = true;
  }
  for (const auto& uri : options_.peers) {
    auto d = std::make_unique<dialer>();
    d->uri = uri;
    const auto ep = resolve(io_, uri, why);
    if (!ep) return fail("peer " + why);
    d->endpoint = *ep;
    d->timer = std::make_unique<asio::steady_timer>(io_);
    dialers_.push_back(std::move(d));
  }
  if (!options_.listen.empty()) {
    const auto ep = resolve(io_, options_.listen, why);
    if (!ep) return fail("listen " + why);
    boost::system::error_code aec;
    acceptor_.open(ep->protocol(), aec);
    if (!aec) acceptor_.set_option(tcp::acceptor::reuse_address(true), aec);
    if (!aec) acceptor_.bind(*ep, aec);
    if (!aec) acceptor_.listen(asio::socket_base::max_listen_connections, aec);
    if (aec) {
      why = "listen on " + options_.listen + ": " + aec.message();
      ec = std::error_code(aec.value(), std::generic_category());
      return;
    }
  }
  // The bridge's own registry entry: `ipcbus list` shows it, `ipcbus stats` its links.
  entry_.set_id(random_id());
  entry_.set_role(ROLE_BRIDGE);
  entry_.set_topic(join(options_.exports));
  entry_.set_transport("tcp");
  entry_.set_endpoint(acceptor_.is_open() ? "tcp://" + acceptor_.local_endpoint().address().to_string() + ":" +
                                                std::to_string(listen_port())
                                          : "");
  entry_.set_pid(::getpid());
  entry_.set_host(bus_.state()->host);
  entry_.mutable_bridge()->set_bus_id(bus_id_);
  entry_.mutable_bridge()->set_listen(entry_.endpoint());
  for (const auto& p : options_.exports) entry_.mutable_bridge()->add_export_(p);
  registration_ = registration::create(bus_.domain_directory(), entry_, ec);
  if (ec) {
    why = "registry entry in " + bus_.domain_directory().string() + ": " + ec.message();
    return;
  }
  std::error_code wec;
  watcher_ = std::make_unique<directory_watcher>(io_, bus_.domain_directory(), [this] {
    if (rescan_posted_) return;
    rescan_posted_ = true;
    asio::post(io_, [this] {
      rescan_posted_ = false;
      rescan();
    });
  }, wec);
  if (wec) watcher_.reset();  // the timer alone then notices changes
  if (acceptor_.is_open()) accept();
  for (auto& d : dialers_) dial(*d);
  rescan();
  arm_rescan();
}

void bridge::drain(std::chrono::milliseconds limit, std::function<void()> done) {
  if (stopped_) return;
  if (draining_) {  // asked again: no more waiting
    drain_deadline_ = std::chrono::steady_clock::now();
    return check_drained();
  }
  draining_ = true;
  drained_ = std::move(done);
  drain_deadline_ = std::chrono::steady_clock::now() + limit;
  // At most half the limit goes to taking in what the local bus already sent us.
  take_in_deadline_ = std::chrono::steady_clock::now() + limit / 2;
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (auto& d : dialers_) d->timer->cancel();
  for (auto& l : std::vector(links_))
    if (l->current_state() != link::state::up) l->close("bridge stopping");
  check_taken_in();
}

namespace {
// How long the local subscriptions must hand over nothing before a drain
// takes their input as complete: a publisher's frames already written to us
// are read in much faster than this.
constexpr std::chrono::milliseconds local_quiet{100};

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void bridge::check_taken_in() {
  if (stopped_) return;
  std::int64_t last = 0;
  for (const auto& [topic, r] : routes_) {
    last = std::max(last, r->last_frame_ns.load(std::memory_order_relaxed));
    // Frames held for a full link are not taken in yet: they go out when it has room.
    if (r->held_count.load() > 0) last = steady_ns();
  }
  const auto quiet_since = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(last));
  const auto now = std::chrono::steady_clock::now();
  if (now - quiet_since >= local_quiet || now >= take_in_deadline_) return finish_links();
  drain_timer_.expires_after(std::chrono::milliseconds(20));
  drain_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) check_taken_in();
  });
}

void bridge::finish_links() {
  // What the local bus publishes from now on is not carried: only what is queued.
  for (auto& [topic, r] : routes_) {
    {
      std::lock_guard lock(r->mutex);
      r->links.clear();
    }
    if (r->subscription) r->subscription->close();
  }
  routes_.clear();
  for (auto& l : std::vector(links_)) {
    if (l->current_state() == link::state::up)
      l->finish();
    else
      l->close("bridge stopping");
  }
  check_drained();
}

void bridge::check_drained() {
  if (stopped_) return;
  reap_workers();
  // No link comes back during a drain: what nothing republishes through any more is closed now.
  close_idle_republishers(true);
  if ((links_.empty() && retiring_.empty() && republishers_.empty()) ||
      std::chrono::steady_clock::now() >= drain_deadline_) {
    if (!links_.empty() || !retiring_.empty() || !republishers_.empty())
      log_line(log_level::warn, "bridge: stopping with frames still queued or being republished: they are dropped");
    stop();
    if (auto done = std::move(drained_)) done();
    return;
  }
  drain_timer_.expires_after(std::chrono::milliseconds(20));
  drain_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) check_drained();
  });
}

bool bridge::set_exports(std::vector<std::string> exports, std::string& why) {
  for (const auto& p : exports)
    if (validate_pattern(p, &why)) {
      why = "export '" + p + "': " + why;
      return false;
    }
  options_.exports = std::move(exports);
  entry_.set_topic(join(options_.exports));
  entry_.mutable_bridge()->clear_export_();
  for (const auto& p : options_.exports) entry_.mutable_bridge()->add_export_(p);
  last_status_time_ = {};  // `ipcbus list` shows the new exports at once
  ++routing_generation_;   // transit obeys the exports too
  publish_status();
  update_routes(last_listing_);  // routes of topics no longer exported close here
  return true;
}

void bridge::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  rescan_timer_.cancel();
  drain_timer_.cancel();
  if (watcher_) watcher_->close();
  for (auto& d : dialers_) d->timer->cancel();
  for (auto& l : std::vector(links_)) l->close("bridge stopping");
  for (auto& [topic, r] : routes_) {
    {
      std::lock_guard lock(r->mutex);
      r->links.clear();
    }
    if (r->subscription) r->subscription->close();
  }
  routes_.clear();
  // Each worker drops what it still holds, cuts short a republish in progress
  // (a reliable one may wait for a slow local subscriber for up to its
  // topic's publish_timeout) and closes its publishers at once, all workers
  // together: joining them then takes a moment, not a publish_timeout.
  for (auto& l : links_) retire_worker(*l, std::chrono::milliseconds(0), true);
  links_.clear();
  for (auto& w : retiring_) w->abort();
  for (auto& w : retiring_) w->join();
  retiring_.clear();
  // No worker republishes any more: the republishers close at once, without draining.
  for (auto& [topic, r] : republishers_) r.publisher->close(std::chrono::milliseconds(0));
  republishers_.clear();
  registration_.reset();
}

void bridge::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (stopped_ || draining_ || ec == asio::error::operation_aborted) return;
    if (!ec) {
      boost::system::error_code rec;
      const auto remote = socket.remote_endpoint(rec);
      const std::string peer = rec ? "unknown peer" : remote.address().to_string() + ":" + std::to_string(remote.port());
      if (!rec && admit(remote.address(), peer)) {
        auto l = make_link(std::move(socket), false, peer, std::make_shared<link_counters>());
        l->source = remote.address();
        l->start();
      }
    } else {
      log_line(log_level::warn, "bridge: accept failed: " + ec.message());
    }
    accept();
  });
}

bool bridge::admit(const asio::ip::address& source, const std::string& peer) {
  std::size_t up = 0, handshaking = 0, from_source = 0;
  for (const auto& l : links_) {
    if (l->current_state() == link::state::up) {
      ++up;
    } else if (!l->dialed() && l->current_state() == link::state::handshaking) {  // not closed, on its way out
      ++handshaking;
      from_source += l->source == source;
    }
  }
  const auto refuse = [&](const std::string& why) {
    ++refused_;
    log_line(log_level::warn, "bridge: refusing " + peer + ": " + why);
    return false;
  };
  if (up >= options_.max_links) return refuse("already " + std::to_string(up) + " links");
  const bool source_full = from_source >= options_.max_handshakes_per_source;
  if (!source_full && handshaking < options_.max_handshakes) return true;
  // Full. A connection that has not said a word yet is the likeliest to be
  // idle or hostile, and a real peer says its hello as soon as it connects:
  // the oldest silent one (from this source when this source is at its
  // limit) makes room for the newcomer. The handshake timeout ends the rest.
  std::shared_ptr<link> oldest;
  for (const auto& l : links_)
    if (!l->dialed() && l->current_state() == link::state::handshaking && !l->heard() &&
        (!source_full || l->source == source) && (!oldest || l->started() < oldest->started()))
      oldest = l;
  if (!oldest)
    return refuse(source_full ? std::to_string(from_source) + " handshakes from this address already"
                              : std::to_string(handshaking) + " handshakes already");
  ++refused_;
  log_line(log_level::info, "bridge: handshake slots are full: closing " + oldest->peer() +
                                ", which has said nothing yet, to make room for " + peer);
  oldest->close("handshake slots are full and it had said nothing");
  return true;
}

std::shared_ptr<link> bridge::make_link(tcp::socket socket, bool dialed, const std::string& peer,
                                        std::shared_ptr<link_counters> counters) {
  link::hooks h;
  h.check_hello = [this](link& l, const BridgeHello& hello) { return check_hello(l, hello); };
  h.on_up = [this](const std::shared_ptr<link>& l) { on_up(l); };
  h.on_record = [this](const std::shared_ptr<link>& l, BridgeRecord& r) { on_record(l, r); };
  h.on_closed = [this](const std::shared_ptr<link>& l) { on_closed(l); };
  auto l = std::make_shared<link>(io_, tls_stream(std::move(socket), tls_context_), tls_, dialed, peer, hello_,
                                  options_.token, options_.limits, std::move(counters), std::move(h));
  links_.push_back(l);
  return l;
}

void bridge::dial(dialer& d) {
  if (stopped_ || draining_) return;
  // A link to that bus exists already (it dialed us): keep it, look again later.
  if (d.peer_bus != 0 && std::any_of(links_.begin(), links_.end(), [&](const auto& l) {
        return l->current_state() == link::state::up && l->peer_bus() == d.peer_bus;
      })) {
    d.state = "up (peer's link)";
    d.backoff = options_.backoff_max;
    d.timer->expires_after(d.backoff);
    d.timer->async_wait([this, &d](const boost::system::error_code& ec) {
      if (!ec) dial(d);
    });
    return;
  }
  d.state = "connecting";
  auto socket = std::make_shared<tcp::socket>(io_);
  socket->async_connect(d.endpoint, [this, &d, socket](const boost::system::error_code& ec) {
    if (stopped_ || draining_) return;
    if (ec) {
      d.last_error = "connect: " + ec.message();
      return retry_later(d);
    }
    d.state = "handshaking";
    d.current = make_link(std::move(*socket), true, d.uri, d.counters);
    d.current->start();
  });
}

void bridge::retry_later(dialer& d) {
  d.current.reset();
  if (draining_) return;
  d.state = "backoff";
  // Exponential, with jitter so that bridges that lost each other at once do not redial in step.
  d.backoff = d.backoff.count() == 0 ? options_.backoff_min : std::min(d.backoff * 2, options_.backoff_max);
  static thread_local std::minstd_rand rng(std::random_device{}());
  const auto jitter = std::uniform_int_distribution<long>(0, d.backoff.count() / 4)(rng);
  d.timer->expires_after(d.backoff + std::chrono::milliseconds(jitter));
  d.timer->async_wait([this, &d](const boost::system::error_code& ec) {
    if (!ec) dial(d);
  });
}

std::string bridge::check_hello(link& l, const BridgeHello& hello) {
  // The link checked the version and the proof of the token already.
  if (hello.bus_id() == bus_id_) return "the peer is this same bus (" + l.peer_name() + ")";
  for (auto& d : dialers_)
    if (d->current.get() == &l) {
      d->peer_bus = hello.bus_id();
      d->peer_name = l.peer_name();
    }
  // One link per pair of buses. When both dialed, both sides keep the link
  // dialed by the bus with the smaller id, so they agree without talking.
  const std::uint64_t dialer_of_new = l.dialed() ? bus_id_ : hello.bus_id();
  for (auto& other : links_) {
    if (other.get() == &l || other->current_state() != link::state::up || other->peer_bus() != hello.bus_id())
      continue;
    const std::uint64_t dialer_of_old = other->dialed() ? bus_id_ : hello.bus_id();
    if (dialer_of_new < dialer_of_old) {
      other->close("replaced by the link dialed by the other side");
      break;
    }
    return "a link between these buses exists already";
  }
  if (!l.dialed()) {  // counted per peer bus, across its reconnects
    if (accepted_.size() >= 4 * options_.max_links && !accepted_.count(hello.bus_id()))
      std::erase_if(accepted_, [&](const auto& e) {  // bounded: forget peers that are not connected
        return std::none_of(links_.begin(), links_.end(), [&](const auto& o) { return o->peer_bus() == e.first; });
      });
    auto& p = accepted_[hello.bus_id()];
    p.address = l.peer();
    p.name = l.peer_name();
    l.adopt_counters(p.counters);
  }
  return {};
}

void bridge::on_up(const std::shared_ptr<link>& l) {
  log_line(log_level::info, "bridge: link up with " + l->peer_name() + " (" + l->peer() + ")");
  for (auto& d : dialers_)
    if (d->current == l) {
      if (d->was_up) d->counters->reconnects.fetch_add(1, std::memory_order_relaxed);
      d->was_up = true;
      d->backoff = std::chrono::milliseconds(0);
      d->state = "up";
      d->last_error.clear();
    }
  if (!l->dialed()) {
    auto& p = accepted_[l->peer_bus()];
    if (p.was_up) p.counters->reconnects.fetch_add(1, std::memory_order_relaxed);
    p.was_up = true;
    p.last_error.clear();
  }
  // Always a first interest record, even an empty one: the peer learns that
  // nothing is wanted yet.
  l->declared_interest = interest_for(*l);
  l->push_control(interest_record(l->declared_interest));
  ++routing_generation_;
}

void bridge::on_closed(const std::shared_ptr<link>& l) {
  std::erase(links_, l);
  if (l->refused_handshake()) ++refused_;  // wrong version or token, a duplicate, no hello first
  if (l->malformed()) {
    ++bad_records_;
    if (!l->was_up()) ++refused_;  // garbage instead of a hello
  }
  if (!l->close_reason().empty() && l->close_reason() != "bridge stopping")
    log_line(log_level::info, "bridge: link with " + (l->peer_name().empty() ? l->peer() : l->peer_name()) +
                                  " ended: " + l->close_reason());
  for (auto& [topic, r] : routes_) {
    std::lock_guard lock(r->mutex);
    std::erase(r->links, l);
  }
  // What the link received is still republished, on the worker's thread.
  retire_worker(*l, std::chrono::milliseconds(100), false);
  if (!l->dialed() && l->was_up())
    if (auto it = accepted_.find(l->peer_bus()); it != accepted_.end()) it->second.last_error = l->close_reason();
  ++routing_generation_;
  if (stopped_) return;
  for (auto& d : dialers_)
    if (d->current == l) {
      d->last_error = l->close_reason();
      retry_later(*d);
    }
  declare_interest();  // what this peer wanted is no longer passed on
  update_routes(last_listing_);
}

void bridge::on_record(const std::shared_ptr<link>& l, BridgeRecord& r) {
  if (r.has_data()) return on_data(*l, *r.mutable_data());
  if (r.has_topic()) return on_topic(*l, r.topic());
  if (r.has_interest()) {
    std::vector<std::string> patterns;
    std::vector<std::uint32_t> hops;
    const auto& interest = r.interest();
    for (int i = 0; i < interest.patterns_size(); ++i) {
      const auto& p = interest.patterns(i);
      if (patterns.size() >= options_.max_topics_per_link) {
        ++interest_cut_;  // counted every time; logged once per link
        if (!l->interest_cut_logged)
          log_line(log_level::warn, "bridge: " + l->peer_name() + " is interested in more than " +
                                        std::to_string(options_.max_topics_per_link) +
                                        " patterns; the rest are ignored");
        l->interest_cut_logged = true;
        break;
      }
      if (!validate_pattern(p)) {  // a bad one could match nothing anyway
        patterns.push_back(p);
        hops.push_back(i < interest.hops_size() ? interest.hops(i) : 0);  // a peer that sends no hops: its own
      }
    }
    l->peer_interest = std::move(patterns);
    l->peer_interest_hops = std::move(hops);
    ++routing_generation_;
    declare_interest();  // our other peers learn what this one wants
    update_routes(last_listing_);
    return;
  }
  ++bad_records_;
  l->close("unknown record from the peer");
}

std::size_t bridge::local_subscribers_for(const std::string& topic) const {
  const int self = ::getpid();
  return static_cast<std::size_t>(std::count_if(last_listing_.begin(), last_listing_.end(), [&](const auto& p) {
    return p.info.role() == ROLE_SUBSCRIBER && p.info.pid() != self && topic_matches(p.info.topic(), topic);
  }));
}

void bridge::on_topic(link& l, const BridgeTopic& t) {
  if (l.inbound.count(t.id())) return l.close("topic id " + std::to_string(t.id()) + " announced twice");
  if (l.inbound.size() >= options_.max_topics_per_link)
    return l.close("more than " + std::to_string(options_.max_topics_per_link) + " topics");
  link::inbound_topic in;
  in.topic = t.topic();
  // A peer sends only what we asked it for (for our subscribers or our other
  // peers): a topic none of the patterns we declared to it matches makes no
  // publisher here (its frames are counted as dropped), so a peer cannot
  // create resources at will.
  if (!matches_any(l.declared_interest, t.topic())) {
    ++bad_records_;
    log_line(log_level::warn, "bridge: " + l.peer_name() + " announced topic '" + printable(t.topic()) +
                                  "' that no subscriber here asked for: not republished");
    l.inbound.emplace(t.id(), std::move(in));
    return;
  }
  // The topic is republished here already (another link brings it, or an
  // earlier link that may come back): this link goes on through the same
  // publisher, so local subscribers see one publisher whose sequence shows
  // what went missing between the links. Only with the same type: one
  // publisher has one type, and its subscribers decode with it.
  if (auto found = republishers_.find(t.topic()); found != republishers_.end()) {
    auto& r = found->second;
    if (r.type_name != t.type_name()) {
      ++bad_records_;
      log_line(log_level::warn, "bridge: " + l.peer_name() + " announced topic '" + printable(t.topic()) +
                                    "' as " + printable(t.type_name()) + ", but it is republished here as " +
                                    printable(r.type_name) + ": its frames from this link are dropped");
      l.inbound.emplace(t.id(), std::move(in));
      return;
    }
    ++r.links;
    in.publisher = r.publisher;
    in.order = r.order;
    in.onward_info = r.onward_info;
    l.inbound.emplace(t.id(), std::move(in));
    return;
  }
  // The type's descriptors go into our registry entry, so tools here decode
  // the topic as they would a local one. A set that does not build is logged
  // and the topic carried without them.
  google::protobuf::DescriptorPool pool;
  const google::protobuf::Descriptor* descriptor = nullptr;
  if (!t.type_name().empty()) {
    bool built = true;
    for (const auto& file : t.descriptors().file()) built = built && pool.BuildFile(file) != nullptr;
    descriptor = built ? pool.FindMessageTypeByName(t.type_name()) : nullptr;
    if (!descriptor)
      log_line(log_level::warn, "bridge: topic '" + printable(t.topic()) + "' from " + l.peer_name() +
                                    ": no usable descriptors for " + printable(t.type_name()));
  }
  std::error_code ec;
  if (descriptor) {
    in.publisher = detail::publisher_core::create(bus_.state(), t.topic(), t.type_name(), descriptor, ec);
  } else {
    in.publisher = detail::publisher_core::create(bus_.state(), t.topic(), t.type_name(), nullptr, ec);
  }
  if (ec) {
    log_line(log_level::warn, "bridge: cannot republish topic '" + printable(t.topic()) + "' from " +
                                  l.peer_name() + ": " + Bus::describe_failure("advertise", printable(t.topic()), ec));
    in.publisher.reset();
  } else {
    // The peer sends only what our subscribers asked for: give them a moment
    // to attach, or the first frames would reach nobody. The worker waits,
    // not this thread; the link's frames queue behind the wait.
    worker_for(l).settle(in.publisher, local_subscribers_for(t.topic()), std::chrono::milliseconds(1000));
    // Passed on with the type as it came and the QoS this bus gives the topic.
    const auto settings = bus_.configuration().settings_for(t.topic());
    auto info = std::make_shared<topic_info>();
    info->topic = t.topic();
    info->type_name = t.type_name();
    info->descriptors = t.descriptors();
    info->qos = settings.qos;
    info->timeout = settings.publish_timeout;
    in.onward_info = std::move(info);
    // Bounded as the links' topics are: a republisher is made only for a
    // topic we declared interest in, at most max_topics_per_link per link;
    // those no link uses any more are bounded in close_idle_republishers.
    in.order = std::make_shared<republish_order>();
    auto& r = republishers_[t.topic()];
    r.publisher = in.publisher;
    r.order = in.order;
    r.type_name = t.type_name();
    r.onward_info = in.onward_info;
    r.links = 1;
  }
  l.inbound.emplace(t.id(), std::move(in));
}

void bridge::on_data(link& l, BridgeData& d) {
  const auto it = l.inbound.find(d.topic_id());
  if (it == l.inbound.end()) {
    ++bad_records_;
    return l.close("data for topic id " + std::to_string(d.topic_id()) + " never announced");
  }
  frame_view frame;
  if (decode_frame(d.frame(), frame)) {
    ++bad_records_;
    return l.close("malformed frame on topic '" + printable(it->second.topic) + "'");
  }
  // Loops: never republish what started here or went round too often.
  const bool returned = frame.header.origin_host == bus_id_;
  // In 64 bits: a peer's hop count of 2^32 - 1 must not wrap round to 0.
  const std::uint64_t hops = frame.header.hop_count;
  const bool too_far = hops + 1 > options_.max_hops;
  if (!it->second.publisher || returned || too_far) {
    returned_ += it->second.publisher && returned;
    hop_limit_ += it->second.publisher && !returned && too_far;
    l.counters().dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The same frame by a second path (a cycle of links): it was republished
  // and passed on when its first copy came. Unless this copy came by fewer
  // hops: with a hop limit shorter than the cycle, the first copy may have
  // come the long way and been too far gone to be passed on, while this one
  // can still reach buses further off. It goes on, but is not republished here.
  // `lost`: the origin publisher's frames this bus will never get, given up
  // on just now (duplicate_filter, "Losses"). The republisher skips as many
  // sequence numbers, so that the subscribers here see the gap a link made.
  std::uint64_t lost = 0;
  const auto seen = seen_.offer(frame.header.origin_host, frame.header.publisher_id, frame.header.sequence, hops,
                                l.peer_bus(), &lost);
  const bool first = seen == duplicate_filter::verdict::first;
  if (!first) ++duplicates_;
  if (seen == duplicate_filter::verdict::copy) return;
  auto& in = it->second;
  std::vector<std::shared_ptr<link>> onward;
  if (!draining_) onward = onward_links(l, in);
  // Its origin bus has it already.
  std::erase_if(onward, [&](const auto& to) { return to->peer_bus() == frame.header.origin_host; });
  // Republished here, but the next bridge would be one too many (counted
  // once per frame, when its first copy came).
  if (!onward.empty() && hops + 2 > options_.max_hops) {
    hop_limit_ += first;
    onward.clear();
  }
  if (!first && onward.empty()) return;
  // A reliable republish may wait for a slow local subscriber, passing on for
  // room in a link's queue: not here, on the link's worker. A full worker
  // stops this link's reading; it resumes once the worker has room (on_room
  // in worker_for).
  auto onward_info = onward.empty() ? nullptr : in.onward_info;
  auto& worker = worker_for(l);
  worker.publish(first ? in.publisher : nullptr, in.order, std::move(*d.mutable_frame()), std::move(onward_info),
                 std::move(onward), lost, &frame);
  if (worker.full()) l.pause_reading();
}

const std::vector<std::shared_ptr<link>>& bridge::onward_links(link& from, link::inbound_topic& in) {
  if (in.onward_generation == routing_generation_) return in.onward;
  in.onward.clear();
  in.onward_generation = routing_generation_;
  if (!in.onward_info || !matches_any(options_.exports, in.topic)) return in.onward;
  for (const auto& l : links_)
    if (l.get() != &from && l->current_state() == link::state::up && matches_any(l->peer_interest, in.topic))
      in.onward.push_back(l);
  return in.onward;
}

std::vector<std::pair<std::string, std::uint32_t>> bridge::interest_for(const link& to) const {
  std::map<std::string, std::uint32_t> fewest;  // per pattern, the fewest hops any source has
  for (const auto& p : interest_) fewest[p] = 0;
  for (const auto& l : links_) {
    if (l.get() == &to || l->current_state() != link::state::up) continue;
    for (std::size_t i = 0; i < l->peer_interest.size(); ++i) {
      // A frame that satisfies it would cross hops + 1 bridges: no more than
      // the limit lets through. This is also what ends interest that goes
      // round a cycle of links after its subscriber left. (In 64 bits: a
      // peer's 2^32 - 1 must not wrap round to 0.)
      if (std::uint64_t{l->peer_interest_hops[i]} + 2 > options_.max_hops) continue;
      const std::uint32_t hops = l->peer_interest_hops[i] + 1;
      auto [at, fresh] = fewest.try_emplace(l->peer_interest[i], hops);
      if (!fresh) at->second = std::min(at->second, hops);
    }
  }
  // Bounded like what we accept from a peer: the fewest hops first.
  std::vector<std::pair<std::string, std::uint32_t>> out(fewest.begin(), fewest.end());
  if (out.size() > options_.max_topics_per_link) {
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    out.resize(options_.max_topics_per_link);
  }
  return out;
}

void bridge::declare_interest() {
  for (auto& l : links_) {
    if (l->current_state() != link::state::up) continue;
    auto interest = interest_for(*l);
    if (interest == l->declared_interest) continue;
    l->declared_interest = std::move(interest);
    l->push_control(interest_record(l->declared_interest));
  }
}

republish_worker& bridge::worker_for(link& l) {
  if (!l.worker) {
    std::weak_ptr<link> weak = l.shared_from_this();
    l.worker = std::make_shared<republish_worker>(l.shared_counters(), options_.republish, [this, weak] {
      asio::post(io_, [weak] {
        if (auto resumed = weak.lock()) resumed->resume_reading();
      });
    });
  }
  return *l.worker;
}

void bridge::retire_worker(link& l, std::chrono::milliseconds drain, bool drop_queued) {
  // The republishers are the bridge's, not the link's: they linger for a link
  // that comes back (close_idle_republishers). The worker's queued jobs hold
  // them meanwhile, so none is closed under a republish still to come.
  for (auto& [id, in] : l.inbound)
    if (in.publisher) release_republisher(in.topic);
  l.inbound.clear();
  if (!l.worker) return;
  l.worker->retire({}, drain, drop_queued);
  retiring_.push_back(std::move(l.worker));
}

std::chrono::milliseconds bridge::republisher_linger() const {
  if (options_.republisher_linger.count() > 0) return options_.republisher_linger;
  // Long enough for a cut link to come back. After this side gave the link
  // up, the peer may notice only up to a link timeout later; the dialing
  // side then waits up to backoff_max (plus a quarter of jitter) and the
  // handshake takes up to its timeout. Twice that leaves room for one
  // attempt that fails (e.g. refused while the other side still held the old
  // link). With the defaults: 14 s, the time a republisher nobody feeds stays
  // in `ipcbus list`.
  return 2 * (options_.limits.timeout + options_.backoff_max + options_.limits.handshake_timeout);
}

void bridge::release_republisher(const std::string& topic) {
  const auto it = republishers_.find(topic);
  if (it == republishers_.end() || it->second.links == 0) return;
  if (--it->second.links == 0) it->second.idle_since = std::chrono::steady_clock::now();
}

void bridge::close_idle_republishers(bool at_once) {
  const auto now = std::chrono::steady_clock::now();
  const auto linger = republisher_linger();
  std::vector<std::shared_ptr<detail::publisher_core>> closing;
  std::vector<std::map<std::string, republisher>::iterator> idle;
  for (auto it = republishers_.begin(); it != republishers_.end(); ++it)
    if (it->second.links == 0) idle.push_back(it);
  // Bounded: a peer that comes and goes with ever other topics leaves at most
  // max_topics_per_link idle ones behind; the longest idle go first.
  std::sort(idle.begin(), idle.end(),
            [](const auto& a, const auto& b) { return a->second.idle_since < b->second.idle_since; });
  const std::size_t limit = options_.max_topics_per_link;
  const std::size_t excess = idle.size() > limit ? idle.size() - limit : 0;
  for (std::size_t i = 0; i < idle.size(); ++i) {
    auto& r = idle[i]->second;
    // Still held by a retiring link's worker (frames it received before its
    // link ended, still being republished): closing now would drop them.
    // The worker lets go when it is done, bounded by the topic's publish_timeout.
    const bool in_use = r.publisher.use_count() > 1;
    if (i < excess || (!in_use && (at_once || now - r.idle_since >= linger))) {
      closing.push_back(std::move(r.publisher));
      republishers_.erase(idle[i]);
    }
  }
  if (closing.empty()) return;
  // Closing drains each for up to 100 ms, as a link's worker did when the
  // republishers were its own: on a thread of its own, not on the io thread.
  // It counts among the retiring workers: a drain waits for it, stop() cuts it short.
  auto closer = std::make_shared<republish_worker>(std::make_shared<link_counters>(), options_.republish, nullptr);
  closer->retire(std::move(closing), std::chrono::milliseconds(100), false);
  retiring_.push_back(std::move(closer));
}

void bridge::reap_workers() {
  std::erase_if(retiring_, [](const auto& w) {
    if (!w->finished()) return false;
    w->join();
    return true;
  });
}

void bridge::arm_rescan() {
  rescan_timer_.expires_after(options_.rescan);
  rescan_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    rescan();
    arm_rescan();
  });
}

void bridge::rescan() {
  if (stopped_) return;
  reap_workers();
  close_idle_republishers(draining_);
  last_listing_ = list_participants(bus_.domain_directory());
  const int self = ::getpid();
  std::set<std::string> patterns;
  for (const auto& p : last_listing_)
    if (p.info.role() == ROLE_SUBSCRIBER && p.info.pid() != self) patterns.insert(p.info.topic());
  std::vector<std::string> interest(patterns.begin(), patterns.end());
  if (interest != interest_) {
    interest_ = std::move(interest);
    declare_interest();
  }
  update_routes(last_listing_);
  publish_status();
}

void bridge::update_routes(const std::vector<participant_record>& participants) {
  if (stopped_ || draining_) return;
  const int self = ::getpid();
  std::map<std::string, const Participant*> topics;  // exported local topics with a publisher here
  for (const auto& p : participants)
    if (p.info.role() == ROLE_PUBLISHER && p.info.pid() != self && matches_any(options_.exports, p.info.topic()))
      topics.try_emplace(p.info.topic(), &p.info);
  // Close routes nobody wants any more.
  for (auto it = routes_.begin(); it != routes_.end();) {
    std::vector<std::shared_ptr<link>> wanted;
    if (topics.count(it->first))
      for (auto& l : links_)
        if (l->current_state() == link::state::up && matches_any(l->peer_interest, it->first)) wanted.push_back(l);
    if (wanted.empty()) {
      {
        std::lock_guard lock(it->second->mutex);
        it->second->links.clear();
      }
      it->second->subscription->close();
      it = routes_.erase(it);
      continue;
    }
    std::lock_guard lock(it->second->mutex);
    it->second->links = std::move(wanted);
    ++it;
  }
  const auto cfg = bus_.configuration();
  for (const auto& [topic, info] : topics) {
    if (routes_.count(topic)) continue;
    std::vector<std::shared_ptr<link>> wanted;
    for (auto& l : links_)
      if (l->current_state() == link::state::up && matches_any(l->peer_interest, topic)) wanted.push_back(l);
    if (wanted.empty()) continue;
    auto r = std::make_shared<route>();
    r->info.topic = topic;
    r->info.type_name = info->type_name();
    r->info.descriptors = info->descriptors();
    r->info.qos = from_proto(info->qos());
    r->info.timeout = cfg.settings_for(topic).publish_timeout;
    r->links = std::move(wanted);
    r->start(bus_.io_context());
    const std::uint64_t here = bus_id_;
    std::weak_ptr<route> weak = r;
    // Runs on the bus's io thread. Only frames that entered the bus here are
    // forwarded this way: what came from a peer is passed on by that link's
    // republish worker, with the origin publisher and sequence the duplicate
    // filter needs (the republished copy carries our republisher's instead).
    auto handler = [weak, here](const frame_view& f, const MessageInfo&) {
      auto route = weak.lock();
      if (!route || f.header.origin_host != here || f.header.hop_count != 0) return true;
      route->last_frame_ns.store(steady_ns(), std::memory_order_relaxed);
      route->forward(f);
      return true;
    };
    std::error_code ec;
    // Not from our own republishers of the same topic: what they publish came
    // from a peer and would only bounce back here (and, reliable, wait on us).
    auto subscription = detail::subscriber_core::create(bus_.state(), topic, "", handler, ec, ::getpid());
    {
      // The bus's io thread may run the handler already, and it reads this.
      std::lock_guard lock(r->mutex);
      r->subscription = subscription;
    }
    if (ec) {
      log_line(log_level::warn, "bridge: cannot subscribe to '" + topic + "': " + ec.message());
      continue;
    }
    routes_.emplace(topic, std::move(r));
  }
}

bridge::route::~route() {
  for (const auto& h : held)
    for (const auto& l : h.owed) l->counters().dropped.fetch_add(1, std::memory_order_relaxed);
}

void bridge::route::start(asio::io_context& io) {
  bus_io = &io;
  // Called by the link on whichever thread made room; the held frames are the
  // bus io thread's.
  on_room = [weak = weak_from_this(), io = bus_io] {
    asio::post(*io, [weak] {
      if (auto r = weak.lock()) r->forward_held();
    });
  };
}

void bridge::route::set_paused(bool paused) {
  std::shared_ptr<detail::subscriber_core> sub;
  {
    std::lock_guard lock(mutex);
    sub = subscription;
  }
  // Null only for a frame that came before create() returned: the next one pauses.
  if (!sub) return;
  if (paused) sub->pause();  // on the bus io thread: no frame after this one until resume()
  else sub->resume();
}

void bridge::route::forward(const frame_view& f) {
  std::vector<std::shared_ptr<link>> targets;
  {
    std::lock_guard lock(mutex);
    targets = links;
  }
  held_frame* waiting = nullptr;
  const auto hold = [&] {
    if (waiting) return;
    waiting = &held.emplace_back();
    encode_delimited_frame(f.header, f.payload.size(), [&](char* out, std::size_t n) {
      std::memcpy(out, f.payload.data(), n);
      return true;
    }, waiting->bytes);
    held_count.store(held.size());
  };
  if (!held.empty()) {
    // Behind the frames held already, for every link: each link gets them in order.
    hold();
    waiting->owed = std::move(targets);
  } else {
    for (auto& l : targets) {
      const auto result = l->try_push_data(info, f, this, on_room);
      if (result == link::push_result::full) {
        hold();
        waiting->owed.push_back(l);
      } else if (result == link::push_result::closed) {  // a link that closed meanwhile does not carry it: a drop too
        l->counters().dropped.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  if (waiting) set_paused(true);
}

void bridge::route::forward_held() {
  while (!held.empty()) {
    auto& h = held.front();
    frame_view f;
    std::uint32_t length = 0;
    std::size_t prefix = 0;
    read_length_prefix(h.bytes, length, prefix);
    decode_frame(std::string_view(h.bytes).substr(prefix), f);  // encoded here: it decodes
    std::erase_if(h.owed, [&](const std::shared_ptr<link>& l) {
      const auto result = l->try_push_data(info, f, this, on_room);
      if (result == link::push_result::closed) l->counters().dropped.fetch_add(1, std::memory_order_relaxed);
      return result != link::push_result::full;
    });
    // Still full: that link calls on_room again when it has room.
    if (!h.owed.empty()) return;
    held.pop_front();
    held_count.store(held.size());
  }
  set_paused(false);
}

void bridge::publish_status() {
  if (!registration_) return;
  auto* status = entry_.mutable_bridge();
  status->clear_links();
  const auto add = [&](const std::string& peer, const std::string& name, const std::string& state,
                       const link_counters& c, std::size_t queued, const std::string& error) {
    auto* s = status->add_links();
    s->set_peer(peer);
    s->set_peer_name(name);
    s->set_state(state);
    s->set_sent(c.sent);
    s->set_received(c.received);
    s->set_dropped(c.dropped);
    s->set_reconnects(c.reconnects);
    s->set_bytes_sent(c.bytes_sent);
    s->set_bytes_received(c.bytes_received);
    s->set_queued_bytes(queued);
    s->set_last_error(error);
  };
  for (const auto& d : dialers_) {
    const bool up = d->current && d->current->current_state() == link::state::up;
    add(d->uri, d->peer_name, d->state, *d->counters, up ? d->current->queued_bytes() : 0, d->last_error);
  }
  // Peers that dialed us, one row per bus with counters kept across its
  // reconnects (totals never go backwards), then connections still in their handshake.
  for (const auto& [bus, p] : accepted_) {
    const auto it = std::find_if(links_.begin(), links_.end(), [&, bus = bus](const auto& l) {
      return !l->dialed() && l->current_state() == link::state::up && l->peer_bus() == bus;
    });
    const bool up = it != links_.end();
    add(p.address, p.name, up ? "up" : "down", *p.counters, up ? (*it)->queued_bytes() : 0, p.last_error);
  }
  for (const auto& l : links_)
    if (!l->dialed() && l->current_state() != link::state::up)
      add(l->peer(), l->peer_name(), "handshaking", l->counters(), l->queued_bytes(), "");
  status->set_refused(refused_);
  status->set_bad_records(bad_records_);
  status->set_interest_cut(interest_cut_);
  status->set_duplicates(duplicates_);
  status->set_hop_limit(hop_limit_);
  status->set_returned(returned_);
  std::string bytes;
  entry_.SerializeToString(&bytes);
  const auto now = std::chrono::steady_clock::now();
  // At most about once a second: every rewrite wakes every watcher of the directory.
  if (bytes == last_status_ || now - last_status_time_ < std::chrono::milliseconds(900)) return;
  last_status_ = std::move(bytes);
  last_status_time_ = now;
  std::error_code ec;
  registration_->update(entry_, ec);
  if (ec) log_line(log_level::warn, "bridge: cannot update the status in the registry: " + ec.message());
}

}  // namespace ipcbus::bridge
