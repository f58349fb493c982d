// FileStore (test only): an archi::Store over a directory, usable across fork()ed processes.
// One file per key (hex-encoded name), written to a temporary file and renamed into place;
// read-modify-write calls (Add, CompareSet, Delete, DeletePrefix) hold an flock on a lock file.
// Wait polls every millisecond until its deadline. Thread- and process-safe.
#pragma once

#include <string>

#include "runtime/core/store.h"

namespace archi::testing {

class FileStore final : public Store {
 public:
  explicit FileStore(std::string dir);
  Status Set(const std::string& key, const std::string& value, Deadline deadline) override;
  Result<std::string> Get(const std::string& key, Deadline deadline) override;
  Result<int64_t> Add(const std::string& key, int64_t delta, Deadline deadline) override;
  Result<std::string> CompareSet(const std::string& key, const std::string& expected,
                                 const std::string& desired, Deadline deadline) override;
  Result<bool> Delete(const std::string& key, Deadline deadline) override;
  Status Wait(const std::vector<std::string>& keys, Deadline deadline) override;
  Result<KeyValues> List(const std::string& prefix, Deadline deadline) override;
  Result<int64_t> DeletePrefix(const std::string& prefix, Deadline deadline) override;

 private:
  std::string PathOf(const std::string& key) const;
  bool ReadKey(const std::string& key, std::string* value) const;
  Status WriteKey(const std::string& key, const std::string& value);
  std::string dir_;
};

}  // namespace archi::testing
