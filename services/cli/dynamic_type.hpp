// Protobuf types rebuilt at run time from the FileDescriptorSets participants
// register (DESIGN.md section 3), so the tool reads and writes types it was never
// compiled with — the reason the registry carries descriptors at all.
//
// dynamic_type: one type with the pool and factory that back it.
// find_type_in_domain: the first live participant that registered a type.
// message_decoder: payload bytes -> JSON per publisher, with a cache.
// Thread-safety: none; each command uses its own instances on one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>

namespace ipcbus::cli {

class dynamic_type {
 public:
  // Builds `full_name` out of `files` (any order: the pool resolves imports
  // through a database lazily). nullptr with `why` set when the set lacks the
  // type or does not build.
  static std::unique_ptr<dynamic_type> build(const google::protobuf::FileDescriptorSet& files,
                                             const std::string& full_name, std::string& why);
  dynamic_type(const dynamic_type&) = delete;
  dynamic_type& operator=(const dynamic_type&) = delete;

  const google::protobuf::Descriptor* descriptor() const { return descriptor_; }
  // A fresh, empty message of this type; valid while this dynamic_type lives.
  std::unique_ptr<google::protobuf::Message> new_message();

 private:
  dynamic_type() : pool_(&database_), factory_(&pool_) {}
  // Declaration order is destruction order in reverse: messages need the
  // factory, the factory the pool, the pool the database.
  google::protobuf::SimpleDescriptorDatabase database_;
  google::protobuf::DescriptorPool pool_;
  google::protobuf::DynamicMessageFactory factory_;
  const google::protobuf::Descriptor* descriptor_ = nullptr;
};

// The type `full_name` as registered by any live participant of the domain
// (those naming it as their type first, then any whose files contain it).
// nullptr when nobody registered it; `source` then stays empty, else it
// describes who provided the type ("publisher 1a2b... on 'topic'").
std::unique_ptr<dynamic_type> find_type_in_domain(const std::filesystem::path& domain_dir,
                                                  const std::string& full_name, std::string& source);

// Turns payloads into JSON using the type each publisher registered.
class message_decoder {
 public:
  explicit message_decoder(std::filesystem::path domain_dir) : domain_dir_(std::move(domain_dir)) {}

  struct result {
    bool decoded = false;   // `json` holds the message
    std::string json;
    std::string type_name;  // empty: raw bytes (or unknown publisher)
    std::string problem;    // why it was not decoded, when it should have been
  };
  // Decodes `payload` from publisher `publisher_id`. The publisher's entry is
  // read once and cached, so a publisher that has since left is still decoded.
  result decode(std::uint64_t publisher_id, std::string_view payload);

 private:
  struct entry {
    std::string type_name;
    std::unique_ptr<dynamic_type> type;
    std::unique_ptr<google::protobuf::Message> scratch;  // reused for every message
    std::string problem;
  };
  entry& lookup(std::uint64_t publisher_id);

  std::filesystem::path domain_dir_;
  std::map<std::uint64_t, entry> cache_;
};

}  // namespace ipcbus::cli
