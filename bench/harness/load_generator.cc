#include "bench/harness/load_generator.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "proto/inference.grpc.pb.h"
#include "proto/inference.pb.h"

namespace archi::harness {

namespace {

// What gRPC's client says when its own deadline timer fires (the server never answered).
constexpr const char* kClientDeadlineMessage = "Deadline Exceeded";

// gRPC deadlines are on the system clock.
std::chrono::system_clock::time_point ToSystem(Clock::time_point t) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(t - Clock::now());
}

double ToMs(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string Fmt(const char* f, double a) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, a);
  return buf;
}

}  // namespace

std::string GrpcCodeName(int code) {
  switch (code) {
    case -1:
      return "LOST";
    case 0:
      return "OK";
    case 1:
      return "CANCELLED";
    case 2:
      return "UNKNOWN";
    case 3:
      return "INVALID_ARGUMENT";
    case 4:
      return "DEADLINE_EXCEEDED";
    case 5:
      return "NOT_FOUND";
    case 6:
      return "ALREADY_EXISTS";
    case 7:
      return "PERMISSION_DENIED";
    case 8:
      return "RESOURCE_EXHAUSTED";
    case 9:
      return "FAILED_PRECONDITION";
    case 10:
      return "ABORTED";
    case 11:
      return "OUT_OF_RANGE";
    case 12:
      return "UNIMPLEMENTED";
    case 13:
      return "INTERNAL";
    case 14:
      return "UNAVAILABLE";
    case 15:
      return "DATA_LOSS";
    case 16:
      return "UNAUTHENTICATED";
    default:
      return "CODE_" + std::to_string(code);
  }
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t i = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size())));
  return values[i - 1];
}

LoadSummary Summarize(const std::vector<RequestRecord>& records) {
  LoadSummary s;
  std::vector<double> lat;
  double first = -1, last = 0;
  for (const RequestRecord& r : records) {
    ++s.sent;
    if (first < 0 || r.send_ms < first) first = r.send_ms;
    if (r.finish_ms > last) last = r.finish_ms;
    if (r.attempts > 1) ++s.retried;
    if (r.lost) {
      ++s.lost;
      ++s.by_code["LOST"];
      continue;
    }
    ++s.by_code[GrpcCodeName(r.code)];
    if (r.code == 4) ++s.deadline_exceeded;
    if (r.code == 0) {
      ++s.ok;
      lat.push_back(r.latency_ms());
      if (r.server_attempts > 1 || r.attempts > 1) ++s.resent;
      if (r.recovered) ++s.recovered;
    }
  }
  s.wall_s = first >= 0 && last > first ? (last - first) / 1000.0 : 0;
  s.throughput = s.wall_s > 0 ? static_cast<double>(s.ok) / s.wall_s : 0;
  s.p50_ms = Percentile(lat, 50);
  s.p90_ms = Percentile(lat, 90);
  s.p99_ms = Percentile(lat, 99);
  double sum = 0;
  for (double x : lat) {
    sum += x;
    s.max_ms = std::max(s.max_ms, x);
  }
  s.mean_ms = lat.empty() ? 0 : sum / static_cast<double>(lat.size());
  return s;
}

std::string LoadSummary::ToString() const {
  std::string codes;
  for (const auto& [name, n] : by_code) {
    codes += (codes.empty() ? "" : " ") + name + "=" + std::to_string(n);
  }
  return std::to_string(sent) + " sent, " + std::to_string(ok) + " OK, " +
         Fmt("%.1f req/s", throughput) + ", p50 " + Fmt("%.1f", p50_ms) + " ms, p90 " +
         Fmt("%.1f", p90_ms) + " ms, p99 " + Fmt("%.1f", p99_ms) + " ms, lost " +
         std::to_string(lost) + " [" + codes + "]" +
         (retried > 0 || recovered > 0
              ? ", retried " + std::to_string(retried) + ", recovered " + std::to_string(recovered)
              : "");
}

std::vector<int64_t> LoadReport::Timeline(double bin_ms) const {
  std::vector<int64_t> bins;
  for (const RequestRecord& r : records) {
    if (r.lost || r.code != 0 || r.finish_ms < 0) continue;
    const size_t b = static_cast<size_t>(r.finish_ms / bin_ms);
    if (bins.size() <= b) bins.resize(b + 1, 0);
    ++bins[b];
  }
  return bins;
}

std::vector<int64_t> LoadReport::ErrorTimeline(double bin_ms) const {
  std::vector<int64_t> bins;
  for (const RequestRecord& r : records) {
    if (r.code == 0 && !r.lost) continue;
    if (r.finish_ms < 0) continue;
    const size_t b = static_cast<size_t>(r.finish_ms / bin_ms);
    if (bins.size() <= b) bins.resize(b + 1, 0);
    ++bins[b];
  }
  return bins;
}

std::string LoadReport::RecordsCsv() const {
  std::string out =
      "index,input,send_ms,finish_ms,latency_ms,code,attempts,server_attempts,server_total_ms,"
      "lost\n";
  char line[256];
  for (const RequestRecord& r : records) {
    std::snprintf(line, sizeof(line), "%lld,%d,%.3f,%.3f,%.3f,%s,%d,%u,%.3f,%d\n",
                  static_cast<long long>(r.index), r.input, r.send_ms, r.finish_ms, r.latency_ms(),
                  GrpcCodeName(r.code).c_str(), r.attempts, r.server_attempts, r.server_total_ms,
                  r.lost ? 1 : 0);
    out += line;
  }
  return out;
}

std::string LoadReport::TimelineCsv(double bin_ms) const {
  const std::vector<int64_t> ok = Timeline(bin_ms);
  const std::vector<int64_t> err = ErrorTimeline(bin_ms);
  std::string out = "bin_start_s,ok,errors,ok_per_s\n";
  char line[128];
  for (size_t i = 0; i < std::max(ok.size(), err.size()); ++i) {
    const int64_t o = i < ok.size() ? ok[i] : 0;
    const int64_t e = i < err.size() ? err[i] : 0;
    std::snprintf(line, sizeof(line), "%.3f,%lld,%lld,%.1f\n",
                  static_cast<double>(i) * bin_ms / 1000.0, static_cast<long long>(o),
                  static_cast<long long>(e), static_cast<double>(o) * 1000.0 / bin_ms);
    out += line;
  }
  return out;
}

// ---- LoadGenerator::Impl ----

class LoadGenerator::Impl {
 public:
  explicit Impl(LoadOptions o) : o_(std::move(o)), rng_(o_.seed) {
    for (int i = 0; i < std::max(1, o_.channels); ++i) {
      grpc::ChannelArguments args;
      // A distinct argument per channel: its own subchannel, i.e. its own connection.
      args.SetInt("archi.loadgen_channel", i);
      if (o_.max_reconnect_backoff_ms > 0) {
        args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                    static_cast<int>(std::min<int64_t>(100, o_.max_reconnect_backoff_ms)));
        args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                    static_cast<int>(std::min<int64_t>(100, o_.max_reconnect_backoff_ms)));
        args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                    static_cast<int>(o_.max_reconnect_backoff_ms));
      }
      auto ch = grpc::CreateCustomChannel(o_.target, grpc::InsecureChannelCredentials(), args);
      stubs_.push_back(proto::Inference::NewStub(ch));
    }
  }

  ~Impl() {
    Stop();
    {
      std::lock_guard<std::mutex> lock(mu_);
      destroying_ = true;  // no retries from now on: every outstanding call gets cancelled below
    }
    if (monitor_.joinable()) {
      monitor_.request_stop();
      monitor_.join();
    }
    std::vector<std::shared_ptr<Call>> calls;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [idx, c] : outstanding_) calls.push_back(c);
    }
    for (auto& c : calls) c->ctx.TryCancel();
    calls.clear();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return active_ == 0; });
    // gRPC destroys its copies of a callback after the callback returned; wait for that, so
    // that no ClientContext (which holds a channel reference) is destroyed on a gRPC thread
    // after the channels below are gone (bounded: it takes microseconds).
    const Deadline d = Deadline::AfterMs(2'000);
    for (;;) {
      PruneDoneLocked();
      if (done_calls_.empty() || d.Expired()) break;
      lock.unlock();
      std::this_thread::sleep_for(Millis(1));
      lock.lock();
    }
  }

  Status Start() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (started_) return FailedPreconditionError("LoadGenerator already started");
      started_ = true;
      sending_ = true;
      t0_ = Clock::now();
      if (o_.duration_s > 0) {
        end_ = t0_ + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(o_.duration_s));
      }
    }
    if (o_.mode == LoadOptions::Mode::kClosed) {
      for (int i = 0; i < o_.concurrency; ++i) SendNew();
    }
    monitor_ = std::jthread([this](std::stop_token st) { Monitor(st); });
    return Status::Ok();
  }

  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    sending_ = false;
    cv_.notify_all();
  }

  Result<LoadReport> Wait(Deadline deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!started_) return FailedPreconditionError("LoadGenerator not started");
    auto done = [&] { return !sending_ && outstanding_.empty() && delayed_outstanding_ == 0; };
    if (deadline.infinite()) {
      cv_.wait(lock, done);
    } else if (!cv_.wait_until(lock, deadline.time_point(), done)) {
      return DeadlineExceededError("LoadGenerator: requests still outstanding at the deadline");
    }
    LoadReport report;
    report.records = records_;
    report.summary = Summarize(records_);
    return report;
  }

  Clock::time_point start_time() const {
    std::lock_guard<std::mutex> lock(mu_);
    return t0_;
  }

  Progress GetProgress() const {
    std::lock_guard<std::mutex> lock(mu_);
    Progress p;
    p.sent = static_cast<int64_t>(records_.size());
    p.ok = ok_;
    p.errors = errors_;
    p.outstanding = static_cast<int64_t>(outstanding_.size());
    p.elapsed_ms = started_ ? ToMs(Clock::now() - t0_) : 0;
    return p;
  }

 private:
  struct Call {
    int64_t index = 0;
    int64_t key = 0;  // unique per attempt
    Clock::time_point deadline;
    grpc::ClientContext ctx;
    proto::EmbedRequest req;
    proto::EmbedResponse resp;
  };

  // Decides under mu_ whether a new request may be sent (limits), and registers it.
  std::shared_ptr<Call> NewRequestLocked() {
    if (!sending_) return nullptr;
    const auto now = Clock::now();
    if ((o_.max_requests > 0 && static_cast<int64_t>(records_.size()) >= o_.max_requests) ||
        (o_.duration_s > 0 && now >= end_)) {
      sending_ = false;
      cv_.notify_all();
      return nullptr;
    }
    RequestRecord r;
    r.index = static_cast<int64_t>(records_.size());
    r.input = static_cast<int>(r.index % static_cast<int64_t>(o_.inputs.size()));
    r.send_ms = ToMs(now - t0_);
    records_.push_back(r);
    return MakeCallLocked(r.index, now + Millis(o_.deadline_ms));
  }

  std::shared_ptr<Call> MakeCallLocked(int64_t index, Clock::time_point deadline) {
    auto c = std::make_shared<Call>();
    c->index = index;
    c->key = next_key_++;
    c->deadline = deadline;
    c->ctx.set_deadline(ToSystem(deadline));
    const LoadInput& in =
        o_.inputs[static_cast<size_t>(records_[static_cast<size_t>(index)].input)];
    c->req.set_model(o_.model);
    c->req.set_client_tag(std::to_string(index));
    if (!o_.request_id_prefix.empty()) {
      c->req.set_request_id(o_.request_id_prefix + std::to_string(index));
    }
    if (!in.ids.empty()) {
      c->req.mutable_ids()->mutable_ids()->Add(in.ids.begin(), in.ids.end());
    } else {
      c->req.set_text(in.text);
    }
    ++records_[static_cast<size_t>(index)].attempts;
    outstanding_[c->key] = c;
    ++active_;
    return c;
  }

  // Starts the RPC (outside mu_: gRPC may run the callback on this thread).
  void Launch(std::shared_ptr<Call> c) {
    proto::Inference::Stub* stub = stubs_[static_cast<size_t>(c->key) % stubs_.size()].get();
    Call* raw = c.get();
    stub->async()->Embed(&raw->ctx, &raw->req, &raw->resp,
                         [this, c = std::move(c)](grpc::Status s) { OnDone(c, s); });
  }

  void SendNew() {
    std::shared_ptr<Call> c;
    {
      std::lock_guard<std::mutex> lock(mu_);
      c = NewRequestLocked();
    }
    if (c) Launch(std::move(c));
  }

  // Frees the finished calls that gRPC no longer references (only done_calls_ holds them).
  void PruneDoneLocked() {
    std::erase_if(done_calls_, [](const std::shared_ptr<Call>& c) { return c.use_count() == 1; });
  }

  void OnDone(const std::shared_ptr<Call>& c, const grpc::Status& s) {
    std::shared_ptr<Call> retry;
    bool send_next = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      outstanding_.erase(c->key);
      // The Call (its ClientContext) is freed by this object, never by gRPC dropping the last
      // reference from inside its own completion path.
      PruneDoneLocked();
      done_calls_.push_back(c);
      RequestRecord& r = records_[static_cast<size_t>(c->index)];
      if (!r.lost) {
        const auto now = Clock::now();
        const int code = static_cast<int>(s.error_code());
        // The backoff before the next attempt (0: at once).
        int64_t backoff_ms = 0;
        if (o_.retry_backoff_ms > 0) {
          backoff_ms = o_.retry_backoff_ms;
          for (int a = 1; a < r.attempts && backoff_ms < o_.max_retry_backoff_ms; ++a) {
            backoff_ms *= 2;
          }
          backoff_ms = std::min(backoff_ms, o_.max_retry_backoff_ms);
          std::uniform_real_distribution<double> jitter(0.75, 1.25);
          backoff_ms = static_cast<int64_t>(static_cast<double>(backoff_ms) * jitter(retry_rng_));
        }
        if (code == grpc::StatusCode::UNAVAILABLE && r.attempts < o_.max_attempts &&
            now + Millis(backoff_ms) < c->deadline && !destroying_) {
          if (backoff_ms == 0) {
            retry = MakeCallLocked(c->index, c->deadline);
          } else {
            // Sent by Monitor when due; counts as outstanding meanwhile (Wait waits for it).
            delayed_.emplace(now + Millis(backoff_ms), std::make_pair(c->index, c->deadline));
            ++delayed_outstanding_;
          }
        } else {
          r.finish_ms = ToMs(now - t0_);
          r.code = code;
          if (code == grpc::StatusCode::OK) {
            r.server_attempts = c->resp.attempts();
            r.server_total_ms = c->resp.total_ms();
            r.server_request_id = c->resp.request_id();
            r.replayed = c->resp.replayed();
            r.recovered = c->resp.recovered();
            if (o_.keep_embeddings) {
              r.embedding.assign(c->resp.embedding().begin(), c->resp.embedding().end());
            }
            ++ok_;
          } else {
            r.message = s.error_message();
            ++errors_;
            if (code == grpc::StatusCode::DEADLINE_EXCEEDED &&
                s.error_message() == kClientDeadlineMessage) {
              r.lost = true;  // gRPC gave up on its own: the server never answered
            }
          }
        }
      }
      // Closed loop: every final answer (or cancellation of a lost request) frees a slot.
      send_next = !retry && r.finish_ms >= 0 && o_.mode == LoadOptions::Mode::kClosed;
      if (r.lost) send_next = !retry && o_.mode == LoadOptions::Mode::kClosed;
    }
    if (retry) Launch(std::move(retry));
    if (send_next) SendNew();
    std::lock_guard<std::mutex> lock(mu_);
    --active_;
    cv_.notify_all();
  }

  void Monitor(std::stop_token st) {
    std::exponential_distribution<double> exp_gap(o_.rate_per_s > 0 ? o_.rate_per_s : 1.0);
    Clock::time_point next_send = t0_;
    const bool open = o_.mode == LoadOptions::Mode::kOpen;
    const std::vector<double>& times = o_.send_times_ms;
    size_t next_time = 0;
    auto at_ms = [&](double ms) {
      return t0_ + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double, std::milli>(ms));
    };
    if (!times.empty()) next_send = at_ms(times[0]);
    while (!st.stop_requested()) {
      auto now = Clock::now();
      if (open) {
        while (now >= next_send) {
          std::shared_ptr<Call> c;
          {
            std::lock_guard<std::mutex> lock(mu_);
            c = NewRequestLocked();
          }
          if (!c) break;
          Launch(std::move(c));
          if (!times.empty()) {
            ++next_time;
            if (next_time < times.size()) {
              next_send = at_ms(times[next_time]);
            } else {  // the last one is sent
              next_send = Clock::time_point::max();
              std::lock_guard<std::mutex> lock(mu_);
              sending_ = false;
              cv_.notify_all();
            }
          } else {
            const double gap_s = o_.poisson ? exp_gap(rng_) : 1.0 / o_.rate_per_s;
            next_send +=
                std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap_s));
          }
          now = Clock::now();
        }
      }
      // Limits by time (closed loop sends only from completions), lost requests, due retries.
      std::vector<std::shared_ptr<Call>> cancel, resend;
      int refill = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        while (!delayed_.empty() && (delayed_.begin()->first <= now || destroying_)) {
          auto [index, deadline] = delayed_.begin()->second;
          delayed_.erase(delayed_.begin());
          --delayed_outstanding_;
          RequestRecord& r = records_[static_cast<size_t>(index)];
          if (destroying_ || r.lost || now >= deadline) {
            // Out of time while backing off: the last answer (UNAVAILABLE) is final.
            r.finish_ms = ToMs(now - t0_);
            r.code = grpc::StatusCode::UNAVAILABLE;
            r.message = "no attempt left before the deadline";
            ++errors_;
            refill += o_.mode == LoadOptions::Mode::kClosed ? 1 : 0;
            continue;
          }
          resend.push_back(MakeCallLocked(index, deadline));
        }
        if (sending_ && o_.duration_s > 0 && now >= end_) {
          sending_ = false;
          cv_.notify_all();
        }
        for (auto& [key, c] : outstanding_) {
          RequestRecord& r = records_[static_cast<size_t>(c->index)];
          if (!r.lost && now > c->deadline + Millis(o_.grace_ms)) {
            r.lost = true;
            ++errors_;
            cancel.push_back(c);
          }
        }
        if (!sending_ && outstanding_.empty() && delayed_outstanding_ == 0) break;
      }
      for (auto& c : cancel) c->ctx.TryCancel();
      for (auto& c : resend) Launch(std::move(c));
      for (; refill > 0; --refill) SendNew();
      auto wake = now + Millis(5);
      if (open && next_send < wake) wake = next_send;
      std::this_thread::sleep_until(wake);
    }
  }

  const LoadOptions o_;
  std::vector<std::unique_ptr<proto::Inference::Stub>> stubs_;
  std::mt19937_64 rng_;  // Monitor thread only
  std::jthread monitor_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool sending_ = false;
  bool destroying_ = false;
  Clock::time_point t0_;
  Clock::time_point end_;
  std::vector<RequestRecord> records_;
  std::unordered_map<int64_t, std::shared_ptr<Call>> outstanding_;
  std::vector<std::shared_ptr<Call>> done_calls_;  // answered, possibly still referenced by gRPC
  int64_t next_key_ = 0;
  // Resends waiting out their backoff: due time -> (request index, its deadline).
  std::multimap<Clock::time_point, std::pair<int64_t, Clock::time_point>> delayed_;
  int64_t delayed_outstanding_ = 0;
  std::mt19937_64 retry_rng_{7};  // under mu_
  int64_t active_ = 0;  // RPCs whose callback has not finished
  int64_t ok_ = 0, errors_ = 0;
};

// ---- LoadGenerator ----

Result<std::unique_ptr<LoadGenerator>> LoadGenerator::Create(LoadOptions o) {
  if (o.target.empty()) return InvalidArgumentError("LoadGenerator: no target");
  if (o.inputs.empty()) return InvalidArgumentError("LoadGenerator: no inputs");
  if (o.max_requests <= 0 && o.duration_s <= 0 && o.send_times_ms.empty()) {
    return InvalidArgumentError("LoadGenerator: set max_requests or duration_s");
  }
  if (o.mode == LoadOptions::Mode::kClosed && o.concurrency < 1) {
    return InvalidArgumentError("LoadGenerator: concurrency must be >= 1");
  }
  if (!o.send_times_ms.empty()) {
    if (o.mode != LoadOptions::Mode::kOpen) {
      return InvalidArgumentError("LoadGenerator: send_times_ms needs the open loop");
    }
    for (size_t i = 0; i < o.send_times_ms.size(); ++i) {
      if (!(o.send_times_ms[i] >= 0) || (i > 0 && o.send_times_ms[i] < o.send_times_ms[i - 1])) {
        return InvalidArgumentError("LoadGenerator: send_times_ms must be ascending and >= 0");
      }
    }
    if (o.max_requests <= 0) o.max_requests = static_cast<int64_t>(o.send_times_ms.size());
  }
  if (o.mode == LoadOptions::Mode::kOpen && o.send_times_ms.empty() && !(o.rate_per_s > 0)) {
    return InvalidArgumentError("LoadGenerator: rate_per_s must be > 0");
  }
  if (o.retry_backoff_ms < 0 || o.max_retry_backoff_ms < o.retry_backoff_ms) {
    return InvalidArgumentError("LoadGenerator: bad retry_backoff_ms/max_retry_backoff_ms");
  }
  if (o.request_id_prefix.size() > 100) {
    return InvalidArgumentError("LoadGenerator: request_id_prefix over 100 bytes");
  }
  if (o.deadline_ms <= 0 || o.grace_ms < 0 || o.max_attempts < 1 || o.channels < 1) {
    return InvalidArgumentError("LoadGenerator: bad deadline_ms/grace_ms/max_attempts/channels");
  }
  return std::unique_ptr<LoadGenerator>(new LoadGenerator(std::make_unique<Impl>(std::move(o))));
}

LoadGenerator::LoadGenerator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LoadGenerator::~LoadGenerator() = default;
Status LoadGenerator::Start() { return impl_->Start(); }
void LoadGenerator::Stop() { impl_->Stop(); }
Result<LoadReport> LoadGenerator::Wait(Deadline deadline) { return impl_->Wait(deadline); }
LoadGenerator::Progress LoadGenerator::GetProgress() const { return impl_->GetProgress(); }
Clock::time_point LoadGenerator::start_time() const { return impl_->start_time(); }

Result<LoadReport> LoadGenerator::Run() {
  ARCHI_RETURN_IF_ERROR(Start());
  return Wait(Deadline::Infinite());
}

}  // namespace archi::harness
