#include "ipcbus/detail/publisher_core.hpp"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <set>
#include <thread>

#include "ipcbus/detail/wall_clock.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/topic.hpp"

namespace ipcbus::detail {
namespace {

// Frames up to this size are kept for reuse by the next publish.
constexpr std::size_t max_spare_frame = 64 * 1024;

// The type's file and all it imports, dependencies first, so that a reader can
// build a DescriptorPool from the set in order.
void add_file(const google::protobuf::FileDescriptor* file, std::set<std::string>& seen,
              google::protobuf::FileDescriptorSet& out) {
  if (!seen.insert(file->name()).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) add_file(file->dependency(i), seen, out);
  file->CopyTo(out.add_file());
}

Qos to_proto(qos_policy q) {
  switch (q) {
    case qos_policy::drop_oldest: return QOS_DROP_OLDEST;
    case qos_policy::drop_newest: return QOS_DROP_NEWEST;
    case qos_policy::reliable: break;
  }
  return QOS_RELIABLE;
}

}  // namespace

publisher_core::publisher_core(std::shared_ptr<bus_state> bus, std::string topic, std::string type_name)
    : bus_(std::move(bus)), topic_(std::move(topic)), type_name_(std::move(type_name)), id_(random_id()) {
  const auto cfg = bus_->current_config();
  settings_ = cfg->settings_for(topic_);
  security_ = cfg->security;
}

std::shared_ptr<publisher_core> publisher_core::create(std::shared_ptr<bus_state> bus, std::string_view topic,
                                                       const std::string& type_name,
                                                       const google::protobuf::Descriptor* descriptor,
                                                       std::error_code& ec) {
  std::string why;
  if ((ec = validate_topic(topic, &why))) {
    log_line(log_level::debug, why);  // the caller gets the error; Bus::describe_failure says why
    return nullptr;
  }
  if (bus->closed) { ec = make_error_code(errc::closed); return nullptr; }
  auto core = std::make_shared<publisher_core>(bus, std::string(topic), type_name);
  transport_backend* t = bus->transports.find(core->settings_.transport);
  if (!t) {
    log_line(log_level::error, "topic '" + core->topic_ + "': transport '" + core->settings_.transport +
                                   "' is not built into this program");
    ec = make_error_code(errc::unknown_transport);
    return nullptr;
  }
  endpoint_options opts;
  opts.topic = core->topic_;
  opts.publisher_id = core->id_;
  opts.settings = core->settings_;
  opts.domain_dir = bus->domain_dir;
  opts.security = core->security_;
  std::weak_ptr<publisher_core> weak = core;
  opts.history = [weak] {
    auto self = weak.lock();
    return self ? self->history_snapshot() : std::vector<frame_ptr>{};
  };
  Participant info;
  info.set_id(core->id_);
  info.set_role(ROLE_PUBLISHER);
  info.set_topic(core->topic_);
  info.set_type_name(type_name);
  if (descriptor) {
    std::set<std::string> seen;
    add_file(descriptor->file(), seen, *info.mutable_descriptors());
  }
  info.set_transport(core->settings_.transport);
  info.set_pid(::getpid());
  info.set_host(bus->host);
  info.set_qos(to_proto(core->settings_.qos));
  info.set_depth(core->settings_.depth);
  info.set_history(core->settings_.history);
  info.set_max_message(core->settings_.max_message);
  info.set_created_ns(wall_clock_ns_exact());
  // The flocked entry first, without an endpoint (subscribers skip it): every
  // <id>.* file the stats block and the transport create after it is then
  // reclaimed with it, should this process die before it is done.
  core->registration_ = registration::create(bus->domain_dir, info, ec);
  if (ec) return nullptr;
  std::error_code stats_ec;
  core->stats_ = stats_block::create(bus->domain_dir / (id_to_hex(core->id_) + ".stats"), stats_ec);
  core->endpoint_ = t->listen(*bus->io, opts, ec);
  if (ec) {
    core->registration_.reset();  // removes the entry and whatever <id>.* exists
    return nullptr;
  }
  core->in_place_ = core->endpoint_->writes_in_place();
  info.set_endpoint(core->endpoint_->uri());
  core->registration_->update(info, ec);
  if (ec) {
    core->endpoint_->close();
    core->registration_.reset();
    return nullptr;
  }
  std::lock_guard lock(bus->subscribers_mutex);
  bus->publishers.push_back(core);
  return core;
}

publisher_core::~publisher_core() { close(std::chrono::milliseconds(0)); }

std::vector<frame_ptr> publisher_core::history_snapshot() const {
  std::lock_guard lock(history_mutex_);
  return {history_.begin(), history_.end()};
}

std::error_code publisher_core::publish(std::size_t payload_size, payload_writer_ref write) {
  if (payload_size > settings_.max_message) return make_error_code(errc::message_too_large);
  std::unique_lock lock(publish_mutex_);
  if (closed_ || loan_out_) {  // checked here first: the call is rarely needed
    if (auto ec = wait_for_loan(lock)) return ec;
  }
  return publish_one(payload_size, write);
}

std::error_code publisher_core::publish_batch(std::size_t count, batch_source_ref messages, std::size_t& published) {
  published = 0;
  std::unique_lock lock(publish_mutex_);
  if (closed_ || loan_out_) {
    if (auto ec = wait_for_loan(lock)) return ec;
  }
  if (count == 0) return {};
  batch_time_ns_ = wall_clock_ns();
  in_batch_ = true;
  endpoint_->begin_batch();
  // Also when a writer throws: what went out before it must become visible.
  struct batch_end {
    publisher_core& self;
    ~batch_end() {
      self.endpoint_->end_batch();
      self.in_batch_ = false;
      self.mirror_counters();
    }
  } end{*this};
  for (; published < count; ++published) {
    const std::size_t size = messages.size(published);
    if (size > settings_.max_message) return make_error_code(errc::message_too_large);
    const std::size_t i = published;
    if (auto ec = publish_one(size, [&](char* out, std::size_t n) { return messages.write(i, out, n); })) return ec;
  }
  return {};
}

std::error_code publisher_core::publish_one(std::size_t payload_size, payload_writer_ref write) {
  if (in_place_) return publish_in_place(payload_size, write);
  // Into a buffer of our own, which finish_frame hands to the endpoint.
  char* payload = nullptr;
  if (auto ec = start_frame(payload_size, payload, true)) return ec;
  bool written = true;
  try {
    written = payload_size == 0 || write(payload, payload_size);
  } catch (...) {
    cancel_frame();  // no frame may stay open for the next publish
    throw;
  }
  if (!written) {
    cancel_frame();
    return make_error_code(errc::invalid_argument);
  }
  return finish_frame();
}

// publish_one() into an endpoint that writes in place: the frame is reserved,
// encoded and committed by one call (publisher_endpoint::write_frame), and
// nothing of it is kept in frame_, which only a loan needs between calls.
std::error_code publisher_core::publish_in_place(std::size_t payload_size, payload_writer_ref write) {
  const frame_header h = next_header();
  const std::error_code ec =
      endpoint_->write_frame(local_frame_size(h, payload_size), next_sequence_, [&](char* out) {
        char* payload = encode_local_frame_header(out, h, payload_size);
        return payload_size == 0 || write(payload, payload_size);
      });
  mirror_counters();
  if (ec) return ec;
  // Sent, or dropped by the endpoint's QoS (counted there): the sequence is spent either way.
  ++next_sequence_;
  count_publish(payload_size);
  return {};
}

frame_header publisher_core::next_header() const {
  frame_header h;
  h.sequence = next_sequence_;
  h.publisher_id = id_;
  h.publish_time_ns = in_batch_ ? batch_time_ns_ : wall_clock_ns();
  h.origin_host = bus_->host_id;
  h.payload_type = type_name_;
  return h;
}

std::error_code publisher_core::publish_forwarded(const frame_header& origin, std::string_view payload,
                                                  std::uint64_t skip) {
  // Skipped even when this frame fails: those frames are lost whatever becomes of it.
  std::unique_lock lock(publish_mutex_);
  next_sequence_ += skip;
  const auto publish_it = [&]() -> std::error_code {
    if (payload.size() > settings_.max_message) return make_error_code(errc::message_too_large);
    if (auto ec = wait_for_loan(lock)) return ec;
    char* out = nullptr;
    forwarded_ = &origin;
    const std::error_code ec = start_frame(payload.size(), out, true);
    forwarded_ = nullptr;
    if (ec) return ec;
    if (out && !payload.empty()) std::memcpy(out, payload.data(), payload.size());
    return finish_frame();  // spends the number when it succeeds
  };
  const std::error_code ec = publish_it();
  // Unlike a publish(), whose caller may try the same message again, a
  // forwarded frame that failed is gone: the next one shows the gap.
  if (ec) ++next_sequence_;
  return ec;
}

void publisher_core::skip_sequences(std::uint64_t n) {
  std::lock_guard lock(publish_mutex_);
  next_sequence_ += n;
}

std::error_code publisher_core::begin_loan(std::size_t size, char*& payload) {
  payload = nullptr;
  if (size > settings_.max_message) return make_error_code(errc::message_too_large);
  std::unique_lock lock(publish_mutex_);
  if (auto ec = wait_for_loan(lock)) return ec;
  if (auto ec = start_frame(size, payload, false)) return ec;
  if (!payload) {  // dropped (counted): the caller still needs somewhere to write
    dropped_loan_.resize(size);
    payload = dropped_loan_.data();
  }
  loan_out_ = true;
  return {};
}

std::error_code publisher_core::finish_loan() {
  std::unique_lock lock(publish_mutex_);
  if (!loan_out_) return make_error_code(errc::invalid_argument);
  loan_out_ = false;
  loan_cv_.notify_one();
  dropped_loan_ = std::string{};  // a dropped loan of up to max_message must not stay allocated
  if (frame_.start) {
    // The time of publishing, not of loaning. A Frame's time always encodes to
    // the same size in practice, and if it ever did not, the loan's time stays.
    frame_header h = frame_.header;
    h.publish_time_ns = wall_clock_ns();
    if (in_place_) {
      encode_local_frame_header(frame_.start, h, frame_.payload_size);  // same size whatever the time
      frame_.header = h;
    } else if (delimited_frame_size(h, frame_.payload_size) ==
               delimited_frame_size(frame_.header, frame_.payload_size)) {
      encode_delimited_frame_header(frame_.start, h, frame_.payload_size);
      frame_.header = h;
    }
  }
  return finish_frame();
}

void publisher_core::cancel_loan() {
  std::unique_lock lock(publish_mutex_);
  if (!loan_out_) return;
  loan_out_ = false;
  loan_cv_.notify_one();
  dropped_loan_ = std::string{};
  cancel_frame();
}

std::error_code publisher_core::wait_for_loan(std::unique_lock<light_mutex>& lock) {
  if (closed_) return make_error_code(errc::closed);
  if (!loan_out_) return {};
  if (!loan_cv_.wait_for(lock, settings_.publish_timeout, [&] { return !loan_out_ || closed_; }))
    return make_error_code(errc::timed_out);
  return closed_ ? make_error_code(errc::closed) : std::error_code{};
}

// Reserves the frame's bytes (in the endpoint's memory, or a buffer of our
// own), writes every field but the payload and returns where the payload goes:
// null when a drop policy discarded the frame at once.
std::shared_ptr<encoded_frame> publisher_core::take_spare_frame() {
  // use_count() 1: the queues and the history have dropped theirs, and nobody
  // can take a new reference but us. The fence orders our writes after the
  // last reader's release of its reference.
  if (spare_frame_ && spare_frame_.use_count() == 1) {
    std::atomic_thread_fence(std::memory_order_acquire);
    return std::move(spare_frame_);
  }
  spare_frame_.reset();
  return std::make_shared<encoded_frame>();
}

std::error_code publisher_core::start_frame(std::size_t payload_size, char*& payload, bool brief) {
  // frame_ is empty here (finish_frame and cancel_frame leave it so, and a
  // failed start leaves no buffer): only the fields are set, never the whole.
  frame_.slot = frame_slot{};
  frame_.slot.brief = brief;
  frame_.start = nullptr;
  frame_.header = next_header();
  if (forwarded_) {
    frame_.header.origin_host = forwarded_->origin_host;
    frame_.header.hop_count = forwarded_->hop_count + 1;
    frame_.header.publish_time_ns = forwarded_->publish_time_ns;
  }
  frame_.payload_size = payload_size;
  if (in_place_) {  // the local frame layout (frame_codec.hpp)
    if (auto ec = endpoint_->reserve(local_frame_size(frame_.header, payload_size), next_sequence_, frame_.slot)) {
      mirror_counters();
      return ec;
    }
    frame_.start = frame_.slot.data;
    payload = frame_.start ? encode_local_frame_header(frame_.start, frame_.header, payload_size) : nullptr;
    return {};
  }
  const std::size_t frame_bytes = frame_size(frame_.header, payload_size);
  frame_.buffer = take_spare_frame();
  frame_.buffer->sequence = next_sequence_;
  frame_.buffer->bytes.resize(delimited_size(frame_bytes));
  frame_.start = frame_.buffer->bytes.data();
  payload = encode_delimited_frame_header(frame_.start, frame_.header, payload_size, frame_bytes);
  return {};
}

std::error_code publisher_core::finish_frame() {
  std::error_code ec;
  if (frame_.buffer) {
    const frame_ptr frame = std::move(frame_.buffer);
    if (settings_.history > 0) {  // before send: a subscriber attaching meanwhile sees it once
      std::lock_guard hl(history_mutex_);
      history_.push_back(frame);
      if (history_.size() > settings_.history) history_.pop_front();
    }
    ec = endpoint_->send(frame);
    if (ec && settings_.history > 0) {  // nobody got it: late joiners must not either
      std::lock_guard hl(history_mutex_);
      if (!history_.empty() && history_.back() == frame) history_.pop_back();
    }
    if (frame->bytes.capacity() <= max_spare_frame) spare_frame_ = std::const_pointer_cast<encoded_frame>(frame);
  } else if (frame_.start) {
    ec = endpoint_->commit(frame_.slot);
  }  // else dropped by the endpoint's QoS, and counted there: the sequence is spent
  const std::size_t payload_size = frame_.payload_size;
  clear_frame();
  mirror_counters();
  if (ec) return ec;
  ++next_sequence_;
  count_publish(payload_size);
  return {};
}

void publisher_core::count_publish(std::size_t payload_size) {
  // Only this publisher writes these (under publish_mutex_): no atomic add needed.
  auto& c = stats_->counters();
  c.messages.store(c.messages.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  c.bytes.store(c.bytes.load(std::memory_order_relaxed) + payload_size, std::memory_order_relaxed);
}

// Only what tells whether a frame is open: assigning a fresh open_frame
// cleared all of its 120 bytes with `rep stos`, which costs more than the
// rest of finish_frame on some processors.
void publisher_core::clear_frame() {
  frame_.start = nullptr;
  frame_.slot.data = nullptr;
  frame_.buffer.reset();
}

void publisher_core::cancel_frame() {
  if (frame_.slot.data) endpoint_->cancel(frame_.slot);
  clear_frame();
}

void publisher_core::mirror_counters() {
  // The endpoint may hold its lock for the batch (counters() takes it): after it.
  if (in_batch_) return;
  const std::uint64_t version = endpoint_->counters_version();
  if (version != 0 && version == mirrored_version_) return;
  mirrored_version_ = version;
  auto& c = stats_->counters();
  const auto counters = endpoint_->counters();
  c.dropped.store(counters.dropped, std::memory_order_relaxed);
  c.timeouts.store(counters.timeouts, std::memory_order_relaxed);
  c.peers_refused.store(counters.peers_refused, std::memory_order_relaxed);
  c.peers.store(endpoint_->subscriber_count(), std::memory_order_relaxed);
}

std::size_t publisher_core::subscriber_count() const {
  return endpoint_ ? endpoint_->subscriber_count() : 0;
}

bool publisher_core::wait_for_subscribers(std::size_t n, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (subscriber_count() < n) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

endpoint_counters publisher_core::counters() const {
  return endpoint_ ? endpoint_->counters() : endpoint_counters{};
}

std::string publisher_core::endpoint_uri() const { return endpoint_ ? endpoint_->uri() : std::string{}; }

void publisher_core::close(std::chrono::milliseconds drain) {
  std::lock_guard lock(publish_mutex_);
  if (closed_) return;
  closed_ = true;
  loan_cv_.notify_all();  // waiting publishes fail with `closed`; an outstanding loan's publish does too
  if (endpoint_) {
    if (drain.count() > 0 && !endpoint_->flush(drain))
      log_line(log_level::warn, "topic '" + topic_ + "': closing with undelivered messages after drain");
    std::lock_guard endpoint_lock(endpoint_close_mutex_);
    endpoint_->close();
  }
  registration_.reset();  // unlinks the entry and every <id>.* file
}

void publisher_core::abort() {
  // Endpoints take close() from any thread while a send or a reservation is
  // in progress: its wait for room notices within a slice and returns `closed`.
  std::lock_guard endpoint_lock(endpoint_close_mutex_);
  if (endpoint_) endpoint_->close();
}

}  // namespace ipcbus::detail
