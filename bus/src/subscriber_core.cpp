#include "ipcbus/detail/subscriber_core.hpp"

#include <unistd.h>

#include <algorithm>
#include <exception>
#include <thread>

#include <boost/asio/post.hpp>

#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/topic.hpp"

namespace ipcbus::detail {

namespace {
// How long a subscriber remembers what an ended link delivered (see ended_links_).
constexpr auto ended_link_memory = std::chrono::seconds(60);
}  // namespace

subscriber_core::subscriber_core(std::shared_ptr<bus_state> bus, std::string pattern, std::string type_name,
                                 frame_handler handler)
    : bus_(std::move(bus)),
      pattern_(std::move(pattern)),
      type_name_(std::move(type_name)),
      handler_(std::move(handler)),
      id_(random_id()) {
  const auto cfg = bus_->current_config();
  settings_ = cfg->settings_for(pattern_);
  security_ = cfg->security;
}

std::shared_ptr<subscriber_core> subscriber_core::create(std::shared_ptr<bus_state> bus, std::string_view pattern,
                                                         const std::string& type_name, frame_handler handler,
                                                         std::error_code& ec, int skip_pid) {
  std::string why;
  if ((ec = validate_pattern(pattern, &why))) {
    log_line(log_level::debug, why);  // the caller gets the error; Bus::describe_failure says why
    return nullptr;
  }
  if (bus->closed) { ec = make_error_code(errc::closed); return nullptr; }
  auto core = std::make_shared<subscriber_core>(bus, std::string(pattern), type_name, std::move(handler));
  core->skip_pid_ = skip_pid;
  Participant info;
  info.set_id(core->id_);
  info.set_role(ROLE_SUBSCRIBER);
  info.set_topic(core->pattern_);
  info.set_type_name(type_name);
  info.set_pid(::getpid());
  info.set_host(bus->host);
  info.set_depth(core->settings_.depth);
  // The flocked entry first: every <id>.* file made after it is reclaimed with
  // it should this process die now.
  core->registration_ = registration::create(bus->domain_dir, info, ec);
  if (ec) return nullptr;
  std::error_code stats_ec;
  core->stats_ = stats_block::create(bus->domain_dir / (id_to_hex(core->id_) + ".stats"), stats_ec);
  bus->add_subscriber(core);
  return core;
}

subscriber_core::~subscriber_core() = default;

void subscriber_core::rescan() {
  {
    std::lock_guard lock(delivery_mutex_);
    if (closed_) return;
  }
  const auto participants = list_participants(bus_->domain_dir);
  // A publisher no longer listed never comes back (ids are not reused); its
  // record is kept a while all the same, in case one listing missed it.
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(ended_links_, [&](const auto& ended) {
    return now - ended.second.when > ended_link_memory &&
           std::none_of(participants.begin(), participants.end(),
                        [&](const participant_record& p) { return p.info.id() == ended.first; });
  });
  for (const auto& pub : participants) {
    if (pub.info.role() != ROLE_PUBLISHER || links_.count(pub.info.id()) || refused_.count(pub.info.id()))
      continue;
    if (skip_pid_ != 0 && static_cast<int>(pub.info.pid()) == skip_pid_) continue;
    if (pub.info.endpoint().empty()) continue;  // still setting up: its entry is rewritten when it listens
    if (!topic_matches(pattern_, pub.info.topic())) continue;
    log_line(log_level::debug, "subscription '" + pattern_ + "': connecting to " + pub.info.endpoint());
    connect_to(pub);
  }
}

void subscriber_core::connect_to(const participant_record& pub) {
  const auto& info = pub.info;
  if (!type_name_.empty() && info.type_name() != type_name_) {
    refused_.insert(info.id());
    stats_->counters().bad_frames.fetch_add(1, std::memory_order_relaxed);
    log_line(log_level::warn, "subscription '" + pattern_ + "' expects " + type_name_ + " but topic '" +
                                  info.topic() + "' carries " +
                                  (info.type_name().empty() ? "raw bytes" : info.type_name()) + "; ignoring it");
    return;
  }
  transport_backend* t = bus_->transports.find(uri_scheme(info.endpoint()));
  if (!t) {
    refused_.insert(info.id());
    log_line(log_level::warn, "topic '" + info.topic() + "': no transport for " + info.endpoint());
    return;
  }
  link_options opts;
  // Never trust a peer's advertised limit more than our own configuration.
  opts.max_frame = std::min<std::uint64_t>(info.max_message(), settings_.max_message) + max_frame_overhead +
                   info.type_name().size();
  opts.security = security_;
  opts.spin = settings_.spin;
  opts.busy_poll = settings_.busy_poll;
  opts.polled_by_bus = bus_->owned_io != nullptr;  // only the bus's own io thread runs the polling loop
  std::weak_ptr<subscriber_core> weak = shared_from_this();
  const std::uint64_t pid = info.id();
  link_callbacks cbs;
  cbs.on_frame = [weak, pid](const frame_view& f) {
    if (auto self = weak.lock()) self->on_frame(pid, f);
  };
  cbs.on_closed = [weak, pid](std::error_code ec, const std::string& reason) {
    if (auto self = weak.lock()) self->on_link_closed(pid, ec, reason);
  };
  std::error_code ec;
  auto link = t->connect(*bus_->io, info.endpoint(), opts, std::move(cbs), ec);
  if (ec) {
    // The publisher may be gone between listing and connecting; a later scan retries.
    log_line(log_level::debug, "topic '" + info.topic() + "': connect to " + info.endpoint() + ": " + ec.message());
    if (ec == errc::access_denied) refused_.insert(pid);
    return;
  }
  if (auto poller = link->poller()) bus_->pollers.push_back(std::move(poller));
  link_entry entry;
  entry.link = std::move(link);
  // Attached to this publisher before (the link ended, and its entry was still
  // listed): what that link delivered is not delivered again, history included.
  if (const auto ended = ended_links_.find(pid); ended != ended_links_.end()) entry.last_sequence = ended->second.sequence;
  entry.info.topic = info.topic();
  entry.info.transport = info.transport();
  entry.info.publisher_id = pid;
  if (links_paused_) entry.link->pause();
  links_.emplace(pid, std::move(entry));
  link_count_.store(links_.size());
  stats_->counters().peers.store(links_.size(), std::memory_order_relaxed);
}

void subscriber_core::on_link_closed(std::uint64_t publisher_id, std::error_code ec, const std::string& reason) {
  auto it = links_.find(publisher_id);
  if (it == links_.end()) return;
  const std::string topic = it->second.info.topic;
  ended_links_[publisher_id] = {it->second.last_sequence, std::chrono::steady_clock::now()};
  // Destroying the link from inside its own callback is safe: its state is
  // kept alive by the pending handler.
  if (recent_link_ == &it->second) recent_link_ = nullptr;
  links_.erase(it);
  link_count_.store(links_.size());
  stats_->counters().peers.store(links_.size(), std::memory_order_relaxed);
  if (ec != errc::peer_gone) {
    // A publisher that sent garbage is not reconnected to. Counted last, so that
    // whoever sees the count also sees the link gone.
    refused_.insert(publisher_id);
    log_line(log_level::warn, "topic '" + topic + "': dropped link to publisher " + id_to_hex(publisher_id) +
                                  ": " + reason);
    stats_->counters().bad_frames.fetch_add(1, std::memory_order_relaxed);
  }
}

void subscriber_core::on_frame(std::uint64_t publisher_id, const frame_view& f) {
  if (!recent_link_ || recent_link_pid_ != publisher_id) {
    auto it = links_.find(publisher_id);
    if (it == links_.end()) return;
    recent_link_ = &it->second;
    recent_link_pid_ = publisher_id;
  }
  link_entry& link = *recent_link_;
  if (f.header.sequence <= link.last_sequence) return;  // already delivered (history overlap)
  if (link.last_sequence == 0) {
    // The first frame on a link sets the gap baseline: what a publisher sent before
    // we attached was never ours to lose. Later local drops still show as gaps.
    std::lock_guard lock(delivery_mutex_);
    last_delivered_.try_emplace(publisher_id, f.header.sequence - 1);
  }
  link.last_sequence = f.header.sequence;
  MessageInfo& info = link.info;
  info.sequence = f.header.sequence;
  info.publish_time_ns = f.header.publish_time_ns;
  info.origin_host = f.header.origin_host;
  info.hop_count = f.header.hop_count;
  info.lost_before = 0;
  if (!handler_) {
    enqueue(f, info);
    return;
  }
  std::lock_guard lock(delivery_mutex_);
  if (closed_) return;
  if (link.last_delivered) account_gap(info, *link.last_delivered);
  else link.last_delivered = &account_gap(info);
  auto& c = stats_->counters();
  if (!handler_(f, info)) {
    c.bad_frames.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  count_delivery(f.payload.size());
}

// messages and bytes change only under delivery_mutex_ (here and in pop()):
// plain stores, no locked read-modify-write, for readers in other processes.
void subscriber_core::count_delivery(std::size_t bytes) {
  auto& c = stats_->counters();
  c.messages.store(c.messages.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  c.bytes.store(c.bytes.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
}

std::uint64_t& subscriber_core::account_gap(MessageInfo& info) {
  auto [it, inserted] = last_delivered_.try_emplace(info.publisher_id, info.sequence);
  // The first message seen from a publisher sets the baseline: a subscriber that
  // joins late has not lost what was sent before it existed.
  if (!inserted) account_gap(info, it->second);
  return it->second;
}

void subscriber_core::account_gap(MessageInfo& info, std::uint64_t& last_delivered) {
  if (info.sequence > last_delivered + 1) info.lost_before = info.sequence - last_delivered - 1;
  last_delivered = info.sequence;
  if (info.lost_before) stats_->counters().lost.fetch_add(info.lost_before, std::memory_order_relaxed);
}

void subscriber_core::enqueue(const frame_view& f, MessageInfo info) {
  std::unique_lock lock(delivery_mutex_);
  if (closed_) return;
  auto& c = stats_->counters();
  if (queue_.size() >= settings_.depth) {
    switch (settings_.qos) {
      case qos_policy::reliable:
        break;  // cannot happen: reading pauses at depth (below)
      case qos_policy::drop_newest:
        c.dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      case qos_policy::drop_oldest:
        queue_.pop_front();
        c.dropped.fetch_add(1, std::memory_order_relaxed);
        break;
    }
  }
  queue_.push_back({std::string(f.payload), std::move(info)});
  // Full under reliable: stop reading, the socket backs up and the publisher waits,
  // so nothing is lost. Decided under the lock so that pop() cannot miss it.
  if (settings_.qos == qos_policy::reliable && queue_.size() >= settings_.depth) set_paused(true);
  lock.unlock();
  delivery_cv_.notify_one();
}

void subscriber_core::set_paused(bool paused) {
  if (paused_.exchange(paused) == paused) return;
  update_links_paused();
}

void subscriber_core::set_held(bool held) {
  if (held_ == held) return;
  held_ = held;
  update_links_paused();
}

void subscriber_core::update_links_paused() {
  const bool paused = held_ || paused_.load();
  if (links_paused_ == paused) return;
  links_paused_ = paused;
  // resume() may deliver buffered frames at once, and a bad one closes its link,
  // which erases it from links_: walk a copy of the ids, not the map.
  std::vector<std::uint64_t> ids;
  for (const auto& [id, link] : links_) ids.push_back(id);
  // A callback that throws during a resume (out of an io_context the
  // application runs) must not leave the other links paused: the first
  // exception goes on once every link had its turn.
  std::exception_ptr thrown;
  for (const auto id : ids) {
    // A link's resume() that delivers at once may fill the pull queue, which
    // pauses every link from inside this loop. Resuming the rest after that
    // would leave them reading into a queue that is full for good: their
    // frames would pass its depth unchecked (set_paused sees it paused
    // already), with no bound while their publishers keep sending.
    if (links_paused_ != paused) break;
    const auto it = links_.find(id);
    if (it == links_.end()) continue;
    try {
      if (paused) it->second.link->pause();
      else it->second.link->resume();
    } catch (...) {
      if (!thrown) thrown = std::current_exception();
    }
  }
  if (thrown) std::rethrow_exception(thrown);
}

void subscriber_core::pause() {
  // On the io thread at once: the caller (a callback) relies on no further
  // frame arriving after this one.
  if (bus_->io->get_executor().running_in_this_thread()) return set_held(true);
  boost::asio::post(*bus_->io, [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->set_held(true);
  });
}

void subscriber_core::resume() {
  if (bus_->io->get_executor().running_in_this_thread()) return set_held(false);
  boost::asio::post(*bus_->io, [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->set_held(false);
  });
}

bool subscriber_core::pop(std::string& payload, MessageInfo& info, std::chrono::milliseconds timeout,
                          std::error_code& ec) {
  // A subscriber with a callback never queues anything: waiting would only
  // use up the timeout, and from inside its own callback it would also hold
  // the delivery lock (taken again, so the wait cannot release it) and keep
  // close() waiting meanwhile.
  if (handler_) {
    ec = make_error_code(errc::invalid_argument);
    return false;
  }
  std::unique_lock lock(delivery_mutex_);
  if (!delivery_cv_.wait_for(lock, timeout, [&] { return closed_ || !queue_.empty(); })) {
    ec = make_error_code(errc::timed_out);
    return false;
  }
  if (closed_) {
    ec = make_error_code(errc::closed);
    return false;
  }
  payload = std::move(queue_.front().payload);
  info = std::move(queue_.front().info);
  queue_.pop_front();
  account_gap(info);
  count_delivery(payload.size());
  // A full queue resumes reading once it is down to half its depth, not at
  // the first free place, and asks the io thread once: the links then read a
  // run of frames per pause instead of one, and a consumer that sets the pace
  // does not cost a wake-up of the io thread for every message it takes.
  // Whatever is still queued when it asks (half the depth; nothing at depth 1,
  // as before) is what the reader takes while the links start reading again.
  const bool resume = paused_.load() && !resume_posted_ && queue_.size() <= resume_level();
  if (resume) resume_posted_ = true;
  lock.unlock();
  if (resume) {
    boost::asio::post(*bus_->io, [weak = weak_from_this()] {
      if (auto self = weak.lock()) {
        std::lock_guard l(self->delivery_mutex_);
        self->resume_posted_ = false;
        if (self->queue_.size() <= self->resume_level()) self->set_paused(false);
      }
    });
  }
  ec.clear();
  return true;
}

bool subscriber_core::wait_for_publishers(std::size_t n, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (link_count_.load() < n) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

void subscriber_core::close() {
  {
    std::lock_guard lock(delivery_mutex_);
    if (closed_) return;
    closed_ = true;
  }
  delivery_cv_.notify_all();
  registration_.reset();
  // Links live on the io thread; close them there.
  boost::asio::post(*bus_->io, [self = shared_from_this()] {
    for (auto& [id, link] : self->links_) link.link->close();
    self->recent_link_ = nullptr;
    self->links_.clear();
    self->link_count_.store(0);
  });
}

}  // namespace ipcbus::detail
