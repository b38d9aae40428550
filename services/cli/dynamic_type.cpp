#include "dynamic_type.hpp"

#include <google/protobuf/util/json_util.h>

#include "ipcbus/registry.hpp"

namespace ipcbus::cli {
namespace {

std::string describe(const participant_record& rec) {
  const auto& p = rec.info;
  return (p.role() == ROLE_PUBLISHER ? "publisher " : "subscriber ") + id_to_hex(p.id()) + " on '" +
         p.topic() + "' (pid " + std::to_string(p.pid()) + ")";
}

}  // namespace

std::unique_ptr<dynamic_type> dynamic_type::build(const google::protobuf::FileDescriptorSet& files,
                                                  const std::string& full_name, std::string& why) {
  std::unique_ptr<dynamic_type> t(new dynamic_type());
  for (const auto& file : files.file()) {
    // A set written by the bus never repeats a file; a conflicting repeat is corrupt.
    if (!t->database_.Add(file)) {
      why = "its descriptor set has a conflicting copy of " + file.name();
      return nullptr;
    }
  }
  t->descriptor_ = t->pool_.FindMessageTypeByName(full_name);
  if (!t->descriptor_) {
    why = "its descriptor set does not define " + full_name + " (or does not build)";
    return nullptr;
  }
  return t;
}

std::unique_ptr<google::protobuf::Message> dynamic_type::new_message() {
  const google::protobuf::Message* prototype = factory_.GetPrototype(descriptor_);
  return std::unique_ptr<google::protobuf::Message>(prototype->New());
}

std::unique_ptr<dynamic_type> find_type_in_domain(const std::filesystem::path& domain_dir,
                                                  const std::string& full_name, std::string& source) {
  const auto records = list_participants(domain_dir);
  // Two passes: an entry whose own type is the one asked for is the natural
  // source; any other set may still define it (a sibling message in one file).
  for (const bool exact : {true, false}) {
    for (const auto& rec : records) {
      if (rec.info.descriptors().file_size() == 0 || (rec.info.type_name() == full_name) != exact) continue;
      std::string why;
      if (auto t = dynamic_type::build(rec.info.descriptors(), full_name, why)) {
        source = describe(rec);
        return t;
      }
    }
  }
  return nullptr;
}

message_decoder::entry& message_decoder::lookup(std::uint64_t publisher_id) {
  if (auto it = cache_.find(publisher_id); it != cache_.end()) return it->second;
  entry e;
  e.problem = "publisher " + id_to_hex(publisher_id) + " is not registered (it left before its message was read)";
  for (const auto& rec : list_participants(domain_dir_, /*include_stale=*/true)) {
    if (rec.info.role() != ROLE_PUBLISHER || rec.info.id() != publisher_id) continue;
    e.problem.clear();
    e.type_name = rec.info.type_name();
    if (e.type_name.empty()) break;  // a raw bytes publisher: nothing to decode
    std::string why;
    e.type = dynamic_type::build(rec.info.descriptors(), e.type_name, why);
    if (e.type)
      e.scratch = e.type->new_message();
    else
      e.problem = "cannot decode " + e.type_name + " from publisher " + id_to_hex(publisher_id) + ": " + why;
    break;
  }
  return cache_.emplace(publisher_id, std::move(e)).first->second;
}

message_decoder::result message_decoder::decode(std::uint64_t publisher_id, std::string_view payload) {
  entry& e = lookup(publisher_id);
  result r;
  r.type_name = e.type_name;
  r.problem = e.problem;
  if (!e.type) return r;
  e.scratch->Clear();
  if (!e.scratch->ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    r.problem = "payload does not parse as " + e.type_name;
    return r;
  }
  const auto status = google::protobuf::util::MessageToJsonString(*e.scratch, &r.json);
  if (!status.ok()) {
    r.problem = "cannot print " + e.type_name + " as JSON: " + std::string(status.message());
    r.json.clear();
    return r;
  }
  r.decoded = true;
  return r;
}

}  // namespace ipcbus::cli
