#include "runtime/core/store.h"

namespace archi {

PrefixStore::PrefixStore(std::shared_ptr<Store> base, std::string prefix)
    : base_(std::move(base)), prefix_(std::move(prefix)) {}

Status PrefixStore::Set(const std::string& key, const std::string& value, Deadline d) {
  return base_->Set(Full(key), value, d);
}
Result<std::string> PrefixStore::Get(const std::string& key, Deadline d) {
  return base_->Get(Full(key), d);
}
Result<int64_t> PrefixStore::Add(const std::string& key, int64_t delta, Deadline d) {
  return base_->Add(Full(key), delta, d);
}
Result<std::string> PrefixStore::CompareSet(const std::string& key, const std::string& expected,
                                            const std::string& desired, Deadline d) {
  return base_->CompareSet(Full(key), expected, desired, d);
}
Result<bool> PrefixStore::Delete(const std::string& key, Deadline d) {
  return base_->Delete(Full(key), d);
}
Status PrefixStore::Wait(const std::vector<std::string>& keys, Deadline d) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const auto& k : keys) full.push_back(Full(k));
  return base_->Wait(full, d);
}
Result<KeyValues> PrefixStore::List(const std::string& prefix, Deadline d) {
  ARCHI_ASSIGN_OR_RETURN(KeyValues kv, base_->List(Full(prefix), d));
  const size_t strip = prefix_.size() + 1;
  for (auto& [k, v] : kv) k.erase(0, strip);
  return kv;
}
Result<int64_t> PrefixStore::DeletePrefix(const std::string& prefix, Deadline d) {
  return base_->DeletePrefix(Full(prefix), d);
}

}  // namespace archi
