#include "collectives/cpu/gloo_store_adapter.h"

#include <utility>

#include <gloo/common/error.h>

namespace archi {

GlooStoreAdapter::GlooStoreAdapter(std::shared_ptr<archi::Store> store, Deadline deadline)
    : store_(std::move(store)), deadline_(deadline) {}

void GlooStoreAdapter::Fail(Status status) {
  if (first_error_.ok()) first_error_ = status;
  throw gloo::IoException("archi store: " + status.ToString());
}

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  Status s = store_->Set(key, std::string(data.begin(), data.end()), deadline_);
  if (!s.ok()) Fail(s.WithContext("set '" + key + "'"));
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  Status s = store_->Wait({key}, deadline_);
  if (!s.ok()) Fail(s.WithContext("wait for '" + key + "'"));
  Result<std::string> value = store_->Get(key, deadline_);
  if (!value.ok()) Fail(value.status().WithContext("get '" + key + "'"));
  return std::vector<char>(value->begin(), value->end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) {
  Status s = store_->Wait(keys, deadline_);
  if (!s.ok()) Fail(s.WithContext("wait"));
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& /*timeout*/) {
  // The connect deadline bounds the whole rendezvous; Gloo's per-call timeout is not used.
  wait(keys);
}

}  // namespace archi
