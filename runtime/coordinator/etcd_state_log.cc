#include "runtime/coordinator/etcd_state_log.h"

#include <zlib.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <sstream>
#include <thread>

#include "runtime/core/logging.h"

namespace archi::coordinator {

namespace epb = etcdserverpb;
using SteadyClock = std::chrono::steady_clock;

namespace {

std::string Padded(uint64_t v, int width) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%0*llu", width, static_cast<unsigned long long>(v));
  return buf;
}

uint32_t Crc(std::string_view s) {
  uLong c = crc32(0L, Z_NULL, 0);
  if (!s.empty()) c = crc32_z(c, reinterpret_cast<const Bytef*>(s.data()), s.size());
  return static_cast<uint32_t>(c);
}

// "if the leader key's create_revision is still `rev`" (or absent when rev == 0).
epb::Compare LeaderGuard(const std::string& key, int64_t rev) {
  epb::Compare c;
  c.set_result(epb::Compare::EQUAL);
  c.set_target(epb::Compare::CREATE);
  c.set_key(key);
  c.set_create_revision(rev);
  return c;
}

void AddPut(epb::TxnRequest& t, const std::string& key, std::string_view value, int64_t lease = 0) {
  auto* p = t.add_success()->mutable_request_put();
  p->set_key(key);
  p->set_value(std::string(value));
  p->set_lease(lease);
}

void AddDelete(epb::TxnRequest& t, const std::string& key, const std::string& end) {
  auto* d = t.add_success()->mutable_request_delete_range();
  d->set_key(key);
  d->set_range_end(end);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// EtcdLeadership

struct EtcdLeadership::Impl {
  std::shared_ptr<EtcdClient> client;
  EtcdLeadershipOptions options;
  std::string key;
  int64_t lease = 0;
  int64_t ttl_s = 0;
  int64_t create_revision = 0;

  mutable std::mutex mu;
  mutable std::condition_variable cv;
  SteadyClock::time_point valid_until{};
  std::string lost;  // why; empty while held
  std::jthread keepalive;

  Deadline Call() const { return Deadline::AfterMs(options.call_timeout_ms); }

  // Renews the lease once; returns false when the lease is gone.
  bool Renew() {
    const auto sent = SteadyClock::now();
    auto ttl = client->LeaseKeepAlive(lease, Call());
    if (ttl.ok()) {
      std::lock_guard lock(mu);
      // 0.8 x TTL counted from the request: our clock may run a little slower than etcd's.
      const auto until = sent + std::chrono::milliseconds(*ttl * 800);
      if (until > valid_until) valid_until = until;
      return true;
    }
    if (ttl.status().code() == StatusCode::kNotFound) {
      Lose("the etcd lease " + std::to_string(lease) + " expired: " + ttl.status().ToString());
      return false;
    }
    ARCHI_LOG_WARN(
        "coordinator: etcd lease keep-alive failed: {} (leadership valid for {} ms more)",
        ttl.status().ToString(), RemainingMs());
    return true;
  }

  int64_t RemainingMs() const {
    std::lock_guard lock(mu);
    return std::chrono::duration_cast<std::chrono::milliseconds>(valid_until - SteadyClock::now())
        .count();
  }

  void Lose(const std::string& why) {
    std::lock_guard lock(mu);
    if (!lost.empty()) return;
    lost = why;
    ARCHI_LOG_ERROR("coordinator: lost the leadership ({}): {}", key, why);
    cv.notify_all();
  }

  void KeepAliveLoop(std::stop_token st) {
    const auto period = std::chrono::milliseconds(std::max<int64_t>(100, ttl_s * 1000 / 3));
    auto next = SteadyClock::now() + period;
    while (!st.stop_requested()) {
      {
        std::unique_lock lock(mu);
        cv.wait_until(lock, next, [&] { return st.stop_requested() || !lost.empty(); });
        if (st.stop_requested() || !lost.empty()) return;
        if (SteadyClock::now() >= valid_until) {
          lock.unlock();
          Lose("no lease renewal for 0.8 x TTL (" + std::to_string(ttl_s) + " s)");
          return;
        }
      }
      next = SteadyClock::now() + period;
      if (!Renew()) return;
      // A failed renewal is retried sooner.
      if (RemainingMs() < ttl_s * 1000 / 2) next = SteadyClock::now() + period / 3;
    }
  }
};

Result<std::unique_ptr<EtcdLeadership>> EtcdLeadership::Campaign(
    std::shared_ptr<EtcdClient> client, EtcdLeadershipOptions options,
    const std::atomic<bool>& stop, const std::function<void(const std::string&)>& on_standby,
    Deadline deadline) {
  if (!client) return InvalidArgumentError("etcd leadership: no client");
  if (options.prefix.empty() || options.ttl_s < 1) {
    return InvalidArgumentError("etcd leadership: empty prefix or ttl < 1 s");
  }
  auto impl = std::make_unique<Impl>();
  impl->client = std::move(client);
  impl->options = std::move(options);
  impl->key = impl->options.prefix + "/leader";
  std::string seen;
  SteadyClock::time_point lease_ok_until{};
  Status last = Status::Ok();
  bool last_logged = false;
  while (true) {
    if (stop) return CancelledError("etcd leadership: stopped while campaigning");
    if (deadline.Expired()) {
      return DeadlineExceededError("etcd leadership: not won before the deadline (" +
                                   (last.ok() ? "leader: " + seen : last.ToString()) + ")");
    }
    Status attempt = [&]() -> Status {
      const auto sent = SteadyClock::now();
      // Our candidate lease: granted once, kept alive while standing by.
      if (impl->lease == 0 || sent >= lease_ok_until) {
        if (impl->lease != 0) {
          auto ttl = impl->client->LeaseKeepAlive(impl->lease, impl->Call());
          if (ttl.ok()) {
            lease_ok_until = sent + std::chrono::milliseconds(*ttl * 1000 / 3);
          } else {
            impl->lease = 0;
          }
        }
        if (impl->lease == 0) {
          ARCHI_ASSIGN_OR_RETURN(auto granted,
                                 impl->client->LeaseGrant(impl->options.ttl_s, impl->Call()));
          impl->lease = granted.first;
          impl->ttl_s = granted.second;
          lease_ok_until = sent + std::chrono::milliseconds(granted.second * 1000 / 3);
        }
      }
      epb::TxnRequest t;
      *t.add_compare() = LeaderGuard(impl->key, 0);
      AddPut(t, impl->key, impl->options.identity, impl->lease);
      auto* r = t.add_failure()->mutable_request_range();
      r->set_key(impl->key);
      ARCHI_ASSIGN_OR_RETURN(auto resp, impl->client->Txn(t, impl->Call()));
      if (resp.succeeded()) {
        impl->create_revision = resp.header().revision();
        std::lock_guard lock(impl->mu);
        impl->valid_until = sent + std::chrono::milliseconds(impl->ttl_s * 800);
        return Status::Ok();
      }
      std::string leader;
      if (resp.responses_size() > 0 && resp.responses(0).has_response_range() &&
          resp.responses(0).response_range().kvs_size() > 0) {
        leader = resp.responses(0).response_range().kvs(0).value();
      }
      if (leader != seen) {
        seen = leader;
        if (on_standby) on_standby(leader);
      }
      return AlreadyExistsError("leader: " + leader);
    }();
    if (attempt.ok()) break;
    if (attempt.code() != StatusCode::kAlreadyExists) {
      if (!last_logged || attempt.ToString() != last.ToString()) {
        ARCHI_LOG_WARN("coordinator: etcd leader election: {} (retrying)", attempt.ToString());
        last_logged = true;
      }
      last = attempt;
    } else {
      last = Status::Ok();
    }
    const auto pause = std::chrono::milliseconds(impl->options.retry_ms);
    const auto until = std::min(SteadyClock::now() + pause, deadline.time_point());
    while (SteadyClock::now() < until && !stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ARCHI_LOG_INFO("coordinator: leader of {} (lease {:x}, TTL {} s, revision {})", impl->key,
                 impl->lease, impl->ttl_s, impl->create_revision);
  Impl* raw = impl.get();
  impl->keepalive = std::jthread([raw](std::stop_token st) { raw->KeepAliveLoop(st); });
  return std::unique_ptr<EtcdLeadership>(new EtcdLeadership(std::move(impl)));
}

EtcdLeadership::EtcdLeadership(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdLeadership::~EtcdLeadership() {
  impl_->keepalive.request_stop();
  impl_->cv.notify_all();
  if (impl_->keepalive.joinable()) impl_->keepalive.join();
}

Status EtcdLeadership::Valid() const {
  std::lock_guard lock(impl_->mu);
  if (!impl_->lost.empty()) return FailedPreconditionError("not the leader: " + impl_->lost);
  if (SteadyClock::now() >= impl_->valid_until) {
    return FailedPreconditionError("not the leader: the etcd lease was not renewed in time");
  }
  return Status::Ok();
}

void EtcdLeadership::MarkLost(const std::string& why) { impl_->Lose(why); }

bool EtcdLeadership::WaitLost(Millis timeout) const {
  std::unique_lock lock(impl_->mu);
  const auto until = SteadyClock::now() + timeout;
  while (impl_->lost.empty()) {
    if (SteadyClock::now() >= impl_->valid_until) return true;
    const auto wake = std::min(until, impl_->valid_until);
    if (impl_->cv.wait_until(lock, wake) == std::cv_status::timeout &&
        SteadyClock::now() >= until) {
      return !impl_->lost.empty() || SteadyClock::now() >= impl_->valid_until;
    }
  }
  return true;
}

void EtcdLeadership::Resign() {
  impl_->Lose("resigned");
  Status s = impl_->client->LeaseRevoke(impl_->lease, impl_->Call());
  if (!s.ok() && s.code() != StatusCode::kNotFound) {  // NotFound: it had expired already
    ARCHI_LOG_WARN(
        "coordinator: cannot revoke the etcd lease (a standby takes over when it "
        "expires): {}",
        s.ToString());
  }
}

const std::string& EtcdLeadership::leader_key() const { return impl_->key; }
int64_t EtcdLeadership::create_revision() const { return impl_->create_revision; }
int64_t EtcdLeadership::lease_id() const { return impl_->lease; }
int64_t EtcdLeadership::ttl_s() const { return impl_->ttl_s; }
const EtcdLeadershipOptions& EtcdLeadership::options() const { return impl_->options; }
EtcdClient& EtcdLeadership::client() { return *impl_->client; }

Result<std::string> EtcdLeadership::CurrentLeader(EtcdClient& client, const std::string& prefix,
                                                  Deadline deadline) {
  epb::RangeRequest r;
  r.set_key(prefix + "/leader");
  ARCHI_ASSIGN_OR_RETURN(auto resp, client.Range(r, deadline));
  return resp.kvs_size() > 0 ? resp.kvs(0).value() : std::string();
}

// ---------------------------------------------------------------------------------------------
// EtcdStateLog

struct EtcdStateLog::Impl {
  std::shared_ptr<EtcdClient> client;
  std::shared_ptr<EtcdLeadership> leadership;
  EtcdStateLogOptions options;
  std::string prefix, log_prefix, snap_prefix, snapshot_key;

  mutable std::mutex mu;                                 // the fields below
  std::deque<std::pair<uint64_t, std::string>> pending;  // appended, not yet in etcd
  uint64_t last = 0, synced = 0, since_snapshot = 0;
  bool snapshot_in_progress = false;
  SteadyClock::time_point retry_at{};
  Status last_error = Status::Ok();
  std::atomic<uint64_t> txns{0};

  std::mutex flush_mu;  // one writer to etcd at a time (Sync, WriteSnapshot)

  std::string LogKey(uint64_t lsn) const { return log_prefix + Padded(lsn, 20); }
  std::string SnapPartPrefix(uint64_t lsn) const { return snap_prefix + Padded(lsn, 20) + "/"; }
  Deadline Call() const { return Deadline::AfterMs(options.call_timeout_ms); }

  // One Txn guarded by the leadership. kFailedPrecondition (and the leadership marked lost)
  // when the guard fails.
  Status FencedTxn(epb::TxnRequest t) {
    ARCHI_RETURN_IF_ERROR(leadership->Valid());
    *t.add_compare() = LeaderGuard(leadership->leader_key(), leadership->create_revision());
    ARCHI_ASSIGN_OR_RETURN(auto resp, client->Txn(t, Call()));
    ++txns;
    if (!resp.succeeded()) {
      leadership->MarkLost("a state write found " + leadership->leader_key() +
                           " recreated by another coordinator");
      return FailedPreconditionError("not the leader any more: the state write of " + prefix +
                                     " was fenced off");
    }
    return Status::Ok();
  }

  // Writes every pending record (flush_mu held).
  Status FlushLocked() {
    std::vector<std::pair<uint64_t, std::string>> batch;
    {
      std::lock_guard lock(mu);
      if (pending.empty()) return Status::Ok();
      if (SteadyClock::now() < retry_at) return last_error;
      batch.assign(pending.begin(), pending.end());
    }
    size_t i = 0;
    while (i < batch.size()) {
      epb::TxnRequest t;
      size_t bytes = 0, j = i;
      while (j < batch.size() && static_cast<size_t>(t.success_size()) < options.max_txn_ops &&
             (j == i || bytes + batch[j].second.size() + 64 <= options.max_txn_bytes)) {
        AddPut(t, LogKey(batch[j].first), batch[j].second);
        bytes += batch[j].second.size() + 64;
        ++j;
      }
      Status s = FencedTxn(std::move(t));
      std::lock_guard lock(mu);
      if (!s.ok()) {
        last_error = s;
        retry_at = SteadyClock::now() + std::chrono::milliseconds(options.retry_after_error_ms);
        return s;
      }
      const uint64_t upto = batch[j - 1].first;
      while (!pending.empty() && pending.front().first <= upto) pending.pop_front();
      synced = std::max(synced, upto);
      last_error = Status::Ok();
      i = j;
    }
    return Status::Ok();
  }

  Status Load(WalContents* c) {
    epb::RangeRequest r;
    r.set_key(snapshot_key);
    ARCHI_ASSIGN_OR_RETURN(auto head, client->Range(r, Call()));
    if (head.kvs_size() > 0) {
      unsigned long long lsn = 0, parts = 0, bytes = 0;
      unsigned crc = 0;
      const std::string& v = head.kvs(0).value();
      if (std::sscanf(v.c_str(), "%llu %llu %llu %x", &lsn, &parts, &bytes, &crc) != 4 ||
          parts > 1'000'000) {
        return Status(
            StatusCode::kDataLoss,
            "etcd " + snapshot_key + ": malformed snapshot header '" + v.substr(0, 64) + "'");
      }
      epb::RangeRequest pr;
      pr.set_key(SnapPartPrefix(lsn));
      pr.set_range_end(EtcdClient::PrefixEnd(SnapPartPrefix(lsn)));
      pr.set_sort_order(epb::RangeRequest::ASCEND);
      ARCHI_ASSIGN_OR_RETURN(auto got, client->Range(pr, Call()));
      std::string payload;
      for (const auto& kv : got.kvs()) payload += kv.value();
      if (static_cast<unsigned long long>(got.kvs_size()) != parts || payload.size() != bytes ||
          Crc(payload) != crc) {
        return Status(StatusCode::kDataLoss,
                      "etcd " + SnapPartPrefix(lsn) + ": snapshot parts do not match " +
                          "their header (" + std::to_string(got.kvs_size()) + " of " +
                          std::to_string(parts) + " parts, " + std::to_string(payload.size()) +
                          " of " + std::to_string(bytes) + " bytes)");
      }
      c->snapshot = std::move(payload);
      c->snapshot_lsn = lsn;
    }
    epb::RangeRequest lr;
    lr.set_key(LogKey(c->snapshot_lsn + 1));
    lr.set_range_end(EtcdClient::PrefixEnd(log_prefix));
    lr.set_sort_order(epb::RangeRequest::ASCEND);
    ARCHI_ASSIGN_OR_RETURN(auto log, client->Range(lr, Call()));
    uint64_t expect = c->snapshot_lsn + 1;
    for (const auto& kv : log.kvs()) {
      const std::string& k = kv.key();
      const std::string digits = k.substr(log_prefix.size());
      if (digits.size() != 20 || digits.find_first_not_of("0123456789") != std::string::npos) {
        return Status(StatusCode::kDataLoss,
                      "etcd: unexpected key '" + k.substr(0, 128) + "' in the state log");
      }
      const uint64_t lsn = std::stoull(digits);
      if (lsn != expect) {
        return Status(StatusCode::kDataLoss, "etcd " + log_prefix + ": record " +
                                                 std::to_string(expect) + " is missing (next is " +
                                                 std::to_string(lsn) + ")");
      }
      c->records.push_back(kv.value());
      ++expect;
    }
    c->last_lsn = expect - 1;
    last = synced = c->last_lsn;
    since_snapshot = c->records.size();
    return Status::Ok();
  }
};

Result<std::unique_ptr<EtcdStateLog>> EtcdStateLog::Open(std::shared_ptr<EtcdClient> client,
                                                         std::shared_ptr<EtcdLeadership> leadership,
                                                         WalContents* contents,
                                                         EtcdStateLogOptions options) {
  if (!client || !leadership || !contents) return InvalidArgumentError("etcd state log: null");
  ARCHI_RETURN_IF_ERROR(leadership->Valid());
  auto impl = std::make_unique<Impl>();
  impl->client = std::move(client);
  impl->leadership = std::move(leadership);
  impl->options = options;
  impl->prefix = impl->leadership->options().prefix;
  impl->log_prefix = impl->prefix + "/log/";
  impl->snap_prefix = impl->prefix + "/snap/";
  impl->snapshot_key = impl->prefix + "/snapshot";
  *contents = WalContents{};
  ARCHI_RETURN_IF_ERROR(impl->Load(contents));
  return std::unique_ptr<EtcdStateLog>(new EtcdStateLog(std::move(impl)));
}

EtcdStateLog::EtcdStateLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdStateLog::~EtcdStateLog() = default;

Result<uint64_t> EtcdStateLog::Append(std::string_view payload) {
  if (payload.size() > impl_->options.max_txn_bytes - 128) {
    return InvalidArgumentError("state record of " + std::to_string(payload.size()) +
                                " bytes is over etcd's request limit");
  }
  std::lock_guard lock(impl_->mu);
  const uint64_t lsn = ++impl_->last;
  impl_->pending.emplace_back(lsn, std::string(payload));
  ++impl_->since_snapshot;
  return lsn;
}

Status EtcdStateLog::Sync() {
  std::lock_guard flush(impl_->flush_mu);
  return impl_->FlushLocked();
}

Status EtcdStateLog::SyncTo(uint64_t lsn) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->synced >= lsn) return impl_->leadership->Valid();
  }
  std::lock_guard flush(impl_->flush_mu);
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->synced >= lsn) return Status::Ok();  // a concurrent Sync covered it
    impl_->retry_at = {};                           // a waiting caller: try now
  }
  return impl_->FlushLocked();
}

uint64_t EtcdStateLog::last_lsn() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last;
}
uint64_t EtcdStateLog::synced_lsn() const {
  std::lock_guard lock(impl_->mu);
  return impl_->synced;
}
uint64_t EtcdStateLog::records_since_snapshot() const {
  std::lock_guard lock(impl_->mu);
  return impl_->since_snapshot;
}
uint64_t EtcdStateLog::txns() const { return impl_->txns.load(); }

Result<uint64_t> EtcdStateLog::BeginSnapshot() {
  std::lock_guard lock(impl_->mu);
  if (impl_->snapshot_in_progress) return FailedPreconditionError("a snapshot is in progress");
  impl_->snapshot_in_progress = true;
  impl_->since_snapshot = 0;
  return impl_->last;
}

Status EtcdStateLog::WriteSnapshot(uint64_t lsn, std::string_view payload) {
  std::lock_guard flush(impl_->flush_mu);
  auto done = [&](Status s) {
    std::lock_guard lock(impl_->mu);
    impl_->snapshot_in_progress = false;
    return s;
  };
  // The records it covers may still be pending: they go first (the log stays gapless).
  if (Status s = impl_->FlushLocked(); !s.ok()) return done(s);
  const std::string parts_prefix = impl_->SnapPartPrefix(lsn);
  const size_t part = impl_->options.max_txn_bytes - 1024;
  size_t parts = 0;
  for (size_t off = 0; off < payload.size() || (off == 0 && parts == 0); off += part) {
    epb::TxnRequest t;
    AddPut(t, parts_prefix + Padded(parts, 6), payload.substr(off, part));
    if (Status s = impl_->FencedTxn(std::move(t)); !s.ok()) return done(s);
    ++parts;
    if (payload.empty()) break;
  }
  char head[96];
  std::snprintf(head, sizeof(head), "%llu %llu %llu %x", static_cast<unsigned long long>(lsn),
                static_cast<unsigned long long>(parts),
                static_cast<unsigned long long>(payload.size()), Crc(payload));
  epb::TxnRequest t;
  AddPut(t, impl_->snapshot_key, head);
  AddDelete(t, impl_->log_prefix, impl_->LogKey(lsn + 1));       // the records it covers
  AddDelete(t, impl_->snap_prefix, impl_->SnapPartPrefix(lsn));  // older snapshots' parts
  return done(impl_->FencedTxn(std::move(t)));
}

Status EtcdStateLog::Writable() const { return impl_->leadership->Valid(); }

std::string EtcdStateLog::Describe() const {
  return "etcd " + impl_->client->endpoints() + " " + impl_->prefix;
}

}  // namespace archi::coordinator
