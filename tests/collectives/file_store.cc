#include "tests/collectives/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace archi::testing {
namespace {

std::string Hex(const std::string& s) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string Unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  }
  return out;
}

class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_CREAT | O_RDWR, 0644)) {
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~FileLock() {
    if (fd_ >= 0) {
      ::flock(fd_, LOCK_UN);
      ::close(fd_);
    }
  }

 private:
  int fd_;
};

}  // namespace

FileStore::FileStore(std::string dir) : dir_(std::move(dir)) {}

std::string FileStore::PathOf(const std::string& key) const { return dir_ + "/k_" + Hex(key); }

bool FileStore::ReadKey(const std::string& key, std::string* value) const {
  std::ifstream in(PathOf(key), std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *value = ss.str();
  return true;
}

Status FileStore::WriteKey(const std::string& key, const std::string& value) {
  static std::atomic<int> counter{0};
  const std::string tmp =
      dir_ + "/tmp_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(value.data(), static_cast<std::streamsize>(value.size()));
    if (!out) return UnavailableError("FileStore: write failed");
  }
  if (std::rename(tmp.c_str(), PathOf(key).c_str()) != 0) {
    return UnavailableError("FileStore: rename failed");
  }
  return Status();
}

Status FileStore::Set(const std::string& key, const std::string& value, Deadline) {
  return WriteKey(key, value);
}

Result<std::string> FileStore::Get(const std::string& key, Deadline) {
  std::string v;
  if (!ReadKey(key, &v)) return NotFoundError("FileStore: no key " + key);
  return v;
}

Result<int64_t> FileStore::Add(const std::string& key, int64_t delta, Deadline) {
  FileLock lock(dir_ + "/.lock");
  std::string v;
  int64_t cur = 0;
  if (ReadKey(key, &v)) {
    try {
      cur = std::stoll(v);
    } catch (...) {
      return InvalidArgumentError("FileStore: not an integer");
    }
  }
  cur += delta;
  if (Status s = WriteKey(key, std::to_string(cur)); !s.ok()) return s;
  return cur;
}

Result<std::string> FileStore::CompareSet(const std::string& key, const std::string& expected,
                                          const std::string& desired, Deadline) {
  FileLock lock(dir_ + "/.lock");
  std::string v;
  const bool present = ReadKey(key, &v);
  if ((!present && expected.empty()) || (present && v == expected)) {
    if (Status s = WriteKey(key, desired); !s.ok()) return s;
    return desired;
  }
  return v;
}

Result<bool> FileStore::Delete(const std::string& key, Deadline) {
  FileLock lock(dir_ + "/.lock");
  return std::remove(PathOf(key).c_str()) == 0;
}

Status FileStore::Wait(const std::vector<std::string>& keys, Deadline deadline) {
  while (true) {
    bool all = true;
    for (const auto& k : keys) {
      if (::access(PathOf(k).c_str(), F_OK) != 0) {
        all = false;
        break;
      }
    }
    if (all) return Status();
    if (deadline.Expired()) return DeadlineExceededError("FileStore: wait timed out");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Result<KeyValues> FileStore::List(const std::string& prefix, Deadline) {
  KeyValues out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return UnavailableError("FileStore: opendir failed");
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("k_", 0) != 0) continue;
    std::string key = Unhex(name.substr(2));
    if (key.rfind(prefix, 0) != 0) continue;
    std::string v;
    if (ReadKey(key, &v)) out.emplace_back(key.substr(prefix.size()), v);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Result<int64_t> FileStore::DeletePrefix(const std::string& prefix, Deadline deadline) {
  auto kvs = List(prefix, deadline);
  if (!kvs.ok()) return kvs.status();
  int64_t n = 0;
  for (const auto& [k, v] : *kvs) {
    if (std::remove(PathOf(prefix + k).c_str()) == 0) ++n;
  }
  return n;
}

}  // namespace archi::testing
