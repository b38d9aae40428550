#include "ipcbus/detail/publisher_core.hpp"

#include <unistd.h>

#include <set>
#include <thread>

#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/topic.hpp"

namespace ipcbus::detail {
namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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
  settings_ = bus_->cfg.settings_for(topic_);
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
  opts.security = bus->cfg.security;
  std::weak_ptr<publisher_core> weak = core;
  opts.history = [weak] {
    auto self = weak.lock();
    return self ? self->history_snapshot() : std::vector<frame_ptr>{};
  };
  std::error_code stats_ec;
  core->stats_ = stats_block::create(bus->domain_dir / (id_to_hex(core->id_) + ".stats"), stats_ec);
  core->endpoint_ = t->listen(*bus->io, opts, ec);
  if (ec) return nullptr;

  Participant info;
  info.set_id(core->id_);
  info.set_role(ROLE_PUBLISHER);
  info.set_topic(core->topic_);
  info.set_type_name(type_name);
  if (descriptor) {
    std::set<std::string> seen;
    add_file(descriptor->file(), seen, *info.mutable_descriptors());
  }
  info.set_endpoint(core->endpoint_->uri());
  info.set_transport(core->settings_.transport);
  info.set_pid(::getpid());
  info.set_host(bus->host);
  info.set_qos(to_proto(core->settings_.qos));
  info.set_depth(core->settings_.depth);
  info.set_history(core->settings_.history);
  info.set_max_message(core->settings_.max_message);
  info.set_created_ns(now_ns());
  core->registration_ = registration::create(bus->domain_dir, info, ec);
  if (ec) {
    core->endpoint_->close();
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

std::error_code publisher_core::publish(std::size_t payload_size, const payload_writer& write) {
  if (payload_size > settings_.max_message) return make_error_code(errc::message_too_large);
  std::lock_guard lock(publish_mutex_);
  if (closed_) return make_error_code(errc::closed);
  frame_header h;
  h.sequence = next_sequence_;
  h.publisher_id = id_;
  h.publish_time_ns = now_ns();
  h.origin_host = bus_->host_id;
  h.payload_type = type_name_;
  auto frame = std::make_shared<encoded_frame>();
  frame->sequence = h.sequence;
  if (!encode_delimited_frame(h, payload_size, write, frame->bytes))
    return make_error_code(errc::invalid_argument);
  if (settings_.history > 0) {  // before send: a subscriber attaching meanwhile sees it once
    std::lock_guard hl(history_mutex_);
    history_.push_back(frame);
    if (history_.size() > settings_.history) history_.pop_front();
  }
  const std::error_code ec = endpoint_->send(frame);
  auto& c = stats_->counters();
  const auto counters = endpoint_->counters();
  c.dropped.store(counters.dropped, std::memory_order_relaxed);
  c.timeouts.store(counters.timeouts, std::memory_order_relaxed);
  c.peers_refused.store(counters.peers_refused, std::memory_order_relaxed);
  c.peers.store(endpoint_->subscriber_count(), std::memory_order_relaxed);
  if (ec) {
    if (settings_.history > 0) {  // nobody got it: late joiners must not either
      std::lock_guard hl(history_mutex_);
      if (!history_.empty() && history_.back() == frame) history_.pop_back();
    }
    return ec;
  }
  ++next_sequence_;
  c.messages.fetch_add(1, std::memory_order_relaxed);
  c.bytes.fetch_add(payload_size, std::memory_order_relaxed);
  return {};
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
  if (endpoint_) {
    if (drain.count() > 0 && !endpoint_->flush(drain))
      log_line(log_level::warn, "topic '" + topic_ + "': closing with undelivered messages after drain");
    endpoint_->close();
  }
  registration_.reset();  // unlinks the entry and every <id>.* file
}

}  // namespace ipcbus::detail
