#include "ipcbus/transport.hpp"

#include "ipcbus/error.hpp"

namespace ipcbus {

std::error_code publisher_endpoint::reserve(std::size_t, std::uint64_t, frame_slot&) {
  return make_error_code(errc::invalid_argument);
}

std::error_code publisher_endpoint::commit(frame_slot&) { return make_error_code(errc::invalid_argument); }

void publisher_endpoint::cancel(frame_slot&) {}

std::error_code publisher_endpoint::write_frame(std::size_t size, std::uint64_t sequence, frame_writer_ref write) {
  frame_slot slot;
  slot.brief = true;
  if (auto ec = reserve(size, sequence, slot)) return ec;
  if (slot.dropped) return {};
  if (auto ec = write_or_cancel(write, slot.data, [&] { cancel(slot); })) return ec;
  return commit(slot);
}

void transport_registry::add(std::unique_ptr<transport_backend> t) {
  std::string key(t->scheme());
  transports_[key] = std::move(t);
}

transport_backend* transport_registry::find(std::string_view scheme) const {
  const auto it = transports_.find(scheme);
  return it == transports_.end() ? nullptr : it->second.get();
}

std::vector<std::string> transport_registry::schemes() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : transports_) out.push_back(name);
  return out;
}

std::string_view uri_scheme(std::string_view uri) {
  const auto pos = uri.find("://");
  return pos == std::string_view::npos ? std::string_view{} : uri.substr(0, pos);
}

}  // namespace ipcbus
