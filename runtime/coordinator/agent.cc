#include "runtime/coordinator/agent.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "proto/coordinator.grpc.pb.h"
#include "runtime/coordinator/auth.h"
#include "runtime/core/logging.h"
#include "runtime/executor/ready_file.h"
#include "runtime/executor/wire.h"
#include "runtime/executor/worker.h"

namespace archi::coordinator {

namespace pb = archi::proto;
namespace ex = archi::executor;
using ex::UnixMillis;

namespace {
Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return Status(static_cast<StatusCode>(s.error_code()), what + ": " + s.error_message());
}
}  // namespace

struct WorkerAgent::Impl {
  AgentOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Coordinator::Stub> stub;

  std::mutex mu;
  std::condition_variable cv;
  uint64_t epoch = 0;
  int heartbeat_interval_ms = 250;
  int heartbeat_timeout_ms = 1000;
  std::atomic<bool> stop{false};
  std::atomic<bool> drain_requested{false};

  // The current assignment (guarded by mu).
  struct Serving {
    pb::Assignment assignment;
    std::shared_ptr<ex::StageWorker> worker;
    std::jthread thread;
    std::atomic<bool> finished{false};
    Status result;
    // Set when the assignment is retired: its links' breaks are no longer reported (they would
    // go out with the next epoch and name peers of the old one).
    std::shared_ptr<std::atomic<bool>> muted = std::make_shared<std::atomic<bool>>(false);
  };
  std::unique_ptr<Serving> serving;
  std::string failed_error;        // reported once as state "failed"
  uint64_t failed_assignment = 0;
  std::deque<pb::WorkerMessage> reports;  // WorldBroken to send
  ex::WorkerSnapshot last_snap;
  int64_t last_snap_ms = 0;

  void WriteStatusFile(const std::string& state, int stage) {
    if (options.status_file.empty()) return;
    nlohmann::json j = {{"id", options.worker_id}, {"pid", getpid()},    {"epoch", epoch},
                        {"state", state},          {"stage", stage},     {"unix_ms", UnixMillis()}};
    if (Status s = ex::WriteFileAtomically(options.status_file, j.dump()); !s.ok()) {
      ARCHI_LOG_WARN("agent {}: {}", options.worker_id, s.ToString());
    }
  }

  // A fresh channel to the coordinator (Run's thread, between sessions). gRPC pools subchannels
  // by address and arguments, and a pooled one keeps the reconnect backoff of the connection the
  // old coordinator dropped: measured 9-15 s of "connection refused" after a frontend restart
  // while the new one was listening. A new generation argument gives a new subchannel, which
  // connects at once.
  std::shared_ptr<grpc::ChannelCredentials> creds;
  int channel_generation = 0;
  void NewChannel() {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(4 << 20);
    // Reconnect within ~100 ms..1 s (gRPC's defaults: 1 s first, up to 120 s, and a 20 s minimum
    // connect timeout).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt("archi.agent_channel_generation", ++channel_generation);
    channel = grpc::CreateCustomChannel(options.coordinator, creds, args);
    stub = pb::Coordinator::NewStub(channel);
  }

  // --coordinator A,B,...: every coordinator's address (a leader and its standbys, archi-coordinator
  // --state-etcd); options.coordinator is the one in use (Run's thread). A try that finds it
  // unavailable (a standby answers UNAVAILABLE naming the leader) moves on to the next.
  std::vector<std::string> coordinators;
  size_t coordinator_index = 0;
  // Moves options.coordinator to the next address; false when that wrapped around to the first.
  bool NextCoordinator() {
    if (coordinators.size() < 2) return false;
    coordinator_index = (coordinator_index + 1) % coordinators.size();
    options.coordinator = coordinators[coordinator_index];
    return coordinator_index != 0;
  }

  Status Register(bool resume) {
    pb::RegisterRequest req;
    req.set_worker_id(options.worker_id);
    req.set_host(options.host);
    req.set_pid(getpid());
    req.set_devices(options.devices);
    req.set_capacity(options.capacity);
    req.set_price_per_hour(options.price_per_hour);
    req.set_kind(options.kind);
    if (resume) req.set_resume_epoch(epoch);
    pb::RegisterResponse resp;
    grpc::ClientContext ctx;
    AddToken(ctx, options.token);
    // A resume is retried with backoff: keep each try short (a restarted coordinator is usually
    // back on its port at once, and a try stuck on a dead connection must not cost 5 s).
    int64_t timeout_ms = 5000;
    if (resume) {
      std::lock_guard lock(mu);
      timeout_ms = std::max(1000, heartbeat_timeout_ms);
    }
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    grpc::Status s = stub->Register(&ctx, req, &resp);
    if (!s.ok()) return FromGrpc(s, "register with " + options.coordinator);
    std::lock_guard lock(mu);
    epoch = resp.epoch();
    heartbeat_interval_ms = std::max(10, resp.heartbeat_interval_ms());
    heartbeat_timeout_ms = std::max(2 * heartbeat_interval_ms, resp.heartbeat_timeout_ms());
    ARCHI_LOG_INFO("agent {}: {} with coordinator {} (epoch {}, pipeline {})", options.worker_id,
                   resp.resumed() ? "resumed" : "registered", options.coordinator, epoch,
                   resp.pipeline());
    return Status::Ok();
  }

  // Stops the current assignment at once (fenced: its work is already elsewhere).
  void StopServing(const std::string& why) {
    std::unique_ptr<Serving> s;
    {
      std::lock_guard lock(mu);
      s = std::move(serving);
      if (s) *s->muted = true;
    }
    if (!s) return;
    ARCHI_LOG_WARN("agent {}: stopping stage {}: {}", options.worker_id, s->assignment.stage(),
                   why);
    s->worker->Stop();
    if (s->thread.joinable()) s->thread.join();
    std::lock_guard lock(mu);
    reports.clear();  // about worlds of the epoch that ended
  }

  // Like StopServing, but the old assignment's clean-up (leaving its worlds and the registry of a
  // store that may be gone with a restarted frontend: seconds of store deadlines) runs on its own
  // thread while the agent registers afresh. The retired Serving is out of `serving` at once, so
  // its end is never reported (no "failed" heartbeat that a coordinator could take for an
  // assignment id of the new epoch). Joined by ReapRetired / at the end of Run.
  struct Retiring {
    std::unique_ptr<Serving> serving;
    std::jthread stopper;
    std::atomic<bool> done{false};
  };
  std::vector<std::unique_ptr<Retiring>> retiring;  // Run's thread only

  void RetireServing(const std::string& why) {
    std::unique_ptr<Serving> s;
    {
      std::lock_guard lock(mu);
      s = std::move(serving);
      if (s) *s->muted = true;
      reports.clear();  // about worlds of the epoch that ended
    }
    if (!s) return;
    // A fixed metrics port must be free before the next assignment binds it: stop in line.
    if (!options.metrics_listen.empty() && !options.metrics_listen.ends_with(":0")) {
      std::lock_guard lock(mu);
      serving = std::move(s);
    }
    if (!s) return StopServing(why);
    ARCHI_LOG_WARN("agent {}: stopping stage {} in the background: {}", options.worker_id,
                   s->assignment.stage(), why);
    auto r = std::make_unique<Retiring>();
    r->serving = std::move(s);
    Retiring* raw = r.get();
    const std::string id = options.worker_id;
    r->stopper = std::jthread([raw, id] {
      const int64_t t0 = UnixMillis();
      raw->serving->worker->Stop();
      if (raw->serving->thread.joinable()) raw->serving->thread.join();
      ARCHI_LOG_INFO("agent {}: old stage {} stopped in {} ms", id,
                     raw->serving->assignment.stage(), UnixMillis() - t0);
      raw->done = true;
    });
    retiring.push_back(std::move(r));
  }

  void ReapRetired(bool wait) {
    std::erase_if(retiring, [&](const std::unique_ptr<Retiring>& r) {
      if (!wait && !r->done) return false;
      if (r->stopper.joinable()) r->stopper.join();
      return true;
    });
  }

  void StartServing(const pb::Assignment& a) {
    std::unique_ptr<Serving> old;
    {
      std::lock_guard lock(mu);
      if (serving && serving->assignment.assignment_id() == a.assignment_id()) return;
      old = std::move(serving);
    }
    if (old) {
      old->worker->Stop();
      if (old->thread.joinable()) old->thread.join();
    }
    ex::WorkerOptions wo;
    wo.store_address = a.store_address();
    wo.pipeline = a.pipeline();
    wo.stage = a.stage();
    wo.id = options.worker_id;
    wo.kind = options.kind;  // the data plane routes by kind (coordinator routing weights)
    wo.threads = options.threads;
    wo.extra_compute_ms = options.extra_compute_ms;
    wo.metrics_listen = options.metrics_listen;
    wo.plan_wait_ms = 10'000;
    wo.store_credential = a.member_credential();
    {
      std::lock_guard lock(mu);
      wo.incarnation = std::to_string(epoch);
    }
    auto s = std::make_unique<Serving>();
    wo.on_link_broken = [this, muted = s->muted](const std::string& world,
                                                 const ex::MemberInfo& peer, const Status& why) {
      if (*muted) return;
      pb::WorkerMessage m;
      auto* b = m.mutable_broken();
      b->set_world(world);
      b->set_peer_id(peer.id);
      b->set_peer_epoch(peer.incarnation);
      b->set_reason(why.ToString().substr(0, 256));
      std::lock_guard lock(mu);
      if (reports.size() < 256) reports.push_back(std::move(m));
      cv.notify_all();
    };
    s->assignment = a;
    s->worker = std::make_shared<ex::StageWorker>(wo);
    Serving* raw = s.get();
    ARCHI_LOG_INFO("agent {}: assigned stage {} layers [{}, {}) (assignment {})",
                   options.worker_id, a.stage(), a.layer_begin(), a.layer_end(),
                   a.assignment_id());
    s->thread = std::jthread([this, raw] {
      raw->result = raw->worker->Run();
      raw->finished = true;
      cv.notify_all();
    });
    std::lock_guard lock(mu);
    serving = std::move(s);
    WriteStatusFile("serving", a.stage());
  }

  // Joins a finished assignment; returns true when one finished.
  bool ReapServing() {
    std::unique_ptr<Serving> s;
    {
      std::lock_guard lock(mu);
      if (!serving || !serving->finished) return false;
      s = std::move(serving);
    }
    if (s->thread.joinable()) s->thread.join();
    if (!s->result.ok()) {
      ARCHI_LOG_WARN("agent {}: stage {} ended: {}", options.worker_id, s->assignment.stage(),
                     s->result.ToString());
      std::lock_guard lock(mu);
      failed_error = s->result.ToString();
      failed_assignment = s->assignment.assignment_id();
    } else {
      ARCHI_LOG_INFO("agent {}: stage {} released; idle", options.worker_id,
                     s->assignment.stage());
    }
    WriteStatusFile("idle", -1);
    return true;
  }

  pb::WorkerMessage MakeHeartbeat() {
    pb::WorkerMessage m;
    m.set_worker_id(options.worker_id);
    auto* hb = m.mutable_heartbeat();
    std::shared_ptr<ex::StageWorker> w;
    uint64_t aid = 0;
    {
      std::lock_guard lock(mu);
      m.set_epoch(epoch);
      if (serving && !serving->finished) {
        w = serving->worker;
        aid = serving->assignment.assignment_id();
      } else if (!failed_error.empty()) {
        hb->set_state("failed");
        hb->set_error(failed_error.substr(0, 512));
        hb->set_assignment_id(failed_assignment);
        failed_error.clear();
        return m;
      }
    }
    if (!w) {
      hb->set_state("idle");
      return m;
    }
    const ex::WorkerSnapshot snap = w->Snapshot();
    const int64_t now = UnixMillis();
    hb->set_state(snap.state == "gone" ? "draining" : snap.state);
    hb->set_assignment_id(aid);
    auto* load = hb->mutable_load();
    load->set_queue_depth(static_cast<double>(snap.queue_depth));
    load->set_batches_processed(snap.processed);
    load->set_batches_resent(snap.resent);
    load->set_inflight(snap.inflight);
    load->set_compute_p50_ms(snap.compute_p50_ms);
    load->set_compute_p99_ms(snap.compute_p99_ms);
    if (last_snap_ms > 0 && now > last_snap_ms && snap.processed >= last_snap.processed) {
      const double dt = static_cast<double>(now - last_snap_ms) / 1e3;
      load->set_throughput_bps(static_cast<double>(snap.processed - last_snap.processed) / dt);
      load->set_utilisation(std::clamp((snap.busy_seconds - last_snap.busy_seconds) / dt, 0.0, 1.0));
    }
    last_snap = snap;
    last_snap_ms = now;
    for (const auto& l : snap.links) hb->add_links(l);
    return m;
  }

  // One session: until the stream breaks, the coordinator stops answering, or we stop.
  // Returns the final status of the stream.
  grpc::Status Session() {
    grpc::ClientContext ctx;
    AddToken(ctx, options.token);
    auto stream = stub->Session(&ctx);
    std::mutex write_mu;
    std::atomic<int64_t> last_ack_ms{UnixMillis()};
    std::atomic<bool> reader_done{false};
    auto write = [&](const pb::WorkerMessage& m) {
      std::lock_guard lock(write_mu);
      return stream->Write(m);
    };
    if (!write(MakeHeartbeat())) {
      return stream->Finish();
    }
    std::jthread reader([&] {
      pb::CoordinatorMessage in;
      while (stream->Read(&in)) {
        last_ack_ms = UnixMillis();
        if (in.has_assign()) {
          StartServing(in.assign());
        } else if (in.has_release()) {
          std::lock_guard lock(mu);
          if (serving && (in.release().assignment_id() == 0 ||
                          serving->assignment.assignment_id() == in.release().assignment_id())) {
            ARCHI_LOG_INFO("agent {}: released from stage {}: {}", options.worker_id,
                           serving->assignment.stage(), in.release().reason());
            serving->worker->RequestDrain();
          }
        } else if (in.has_worlds()) {
          std::lock_guard lock(mu);
          for (const auto& r : in.worlds().remove()) {
            if (serving) {
              serving->worker->DropPeer(r.peer_id(), r.peer_epoch(),
                                        "the coordinator declared " + r.peer_id() + " dead");
            }
          }
        }
        cv.notify_all();
      }
      reader_done = true;
      cv.notify_all();
    });
    int64_t next_hb = UnixMillis() + heartbeat_interval_ms;
    bool healthy = true;
    while (!stop && !reader_done && healthy) {
      std::vector<pb::WorkerMessage> out;
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(
                              1, std::min<int64_t>(20, next_hb - UnixMillis()))));
        while (!reports.empty()) {
          out.push_back(std::move(reports.front()));
          reports.pop_front();
        }
      }
      for (auto& m : out) {
        m.set_worker_id(options.worker_id);
        {
          std::lock_guard lock(mu);
          m.set_epoch(epoch);
        }
        if (!write(m)) healthy = false;
      }
      const bool finished = ReapServing();
      ReapRetired(/*wait=*/false);
      if (finished && drain_requested) stop = true;
      const int64_t now = UnixMillis();
      if (now >= next_hb || finished) {
        next_hb = now + heartbeat_interval_ms;
        if (!write(MakeHeartbeat())) healthy = false;
      }
      if (now - last_ack_ms > 3 * static_cast<int64_t>(heartbeat_timeout_ms)) {
        ARCHI_LOG_WARN("agent {}: no answer from the coordinator for {} ms; reconnecting",
                       options.worker_id, now - last_ack_ms.load());
        healthy = false;
      }
      if (drain_requested) {
        std::lock_guard lock(mu);
        if (!serving) stop = true;
      }
    }
    if (!reader_done) ctx.TryCancel();
    reader.join();
    return stream->Finish();
  }

  Status Run() {
    if (options.worker_id.empty()) options.worker_id = "w" + std::to_string(getpid());
    if (options.host.empty()) {
      char host[256] = {};
      gethostname(host, sizeof(host) - 1);
      options.host = host;
    }
    for (size_t b = 0; b <= options.coordinator.size();) {
      size_t e = options.coordinator.find(',', b);
      if (e == std::string::npos) e = options.coordinator.size();
      if (e > b) coordinators.push_back(options.coordinator.substr(b, e - b));
      b = e + 1;
    }
    if (coordinators.empty()) return InvalidArgumentError("no coordinator address");
    options.coordinator = coordinators[0];
    ARCHI_ASSIGN_OR_RETURN(creds, MakeChannelCredentials(options.tls));
    NewChannel();
    // First registration: bounded; a refusal other than "unavailable" is final.
    const int64_t give_up = UnixMillis() + options.register_timeout_ms;
    while (true) {
      Status s = Register(false);
      if (s.ok()) break;
      if (s.code() != StatusCode::kUnavailable && s.code() != StatusCode::kDeadlineExceeded) {
        return s;
      }
      if (UnixMillis() > give_up || stop) return s;
      if (coordinators.size() > 1) {  // the next coordinator at once, a pause after a round
        const bool more = NextCoordinator();
        NewChannel();
        if (more) continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    WriteStatusFile("idle", -1);
    int64_t backoff_ms = 100;
    while (!stop) {
      grpc::Status end = Session();
      if (stop) break;
      const int64_t t0 = UnixMillis();
      ARCHI_LOG_WARN("agent {}: session ended: {} {}", options.worker_id,
                     static_cast<int>(end.error_code()), end.error_message());
      // Reconnect: resume the epoch; if it was retired, stop serving and register afresh.
      while (!stop) {
        NewChannel();
        Status s = Register(true);
        if (s.ok()) {
          backoff_ms = 100;
          break;
        }
        if (s.code() == StatusCode::kFailedPrecondition) {
          // Register first: the old assignment's clean-up must not delay the new one (a
          // restarted frontend's coordinator refuses every epoch of the old one).
          RetireServing("the coordinator retired epoch " + std::to_string(epoch));
          Status fresh = Register(false);
          if (fresh.ok()) {
            WriteStatusFile("idle", -1);
            break;
          }
          s = fresh;
        }
        if (s.code() == StatusCode::kUnauthenticated || s.code() == StatusCode::kInvalidArgument) {
          StopServing("refused by the coordinator");
          ReapRetired(/*wait=*/true);
          return s;
        }
        ReapServing();
        if (drain_requested) {
          std::lock_guard lock(mu);
          if (!serving) {
            stop = true;
            break;
          }
        }
        if (coordinators.size() > 1 && NextCoordinator()) continue;  // the next one at once
        ARCHI_LOG_DEBUG("agent {}: coordinator unavailable ({}); retry in {} ms",
                        options.worker_id, s.ToString(), backoff_ms);
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
        // With standbys a new leader serves within its lease: poll the round every <= 250 ms.
        backoff_ms = std::min<int64_t>(backoff_ms * 2, coordinators.size() > 1 ? 250 : 2000);
      }
      ARCHI_LOG_INFO("agent {}: reconnected after {} ms", options.worker_id, UnixMillis() - t0);
      ReapRetired(/*wait=*/false);
    }
    StopServing("agent stopping");
    ReapRetired(/*wait=*/true);
    return Status::Ok();
  }
};

WorkerAgent::WorkerAgent(AgentOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}
WorkerAgent::~WorkerAgent() { Stop(); }

Status WorkerAgent::Run() { return impl_->Run(); }

void WorkerAgent::RequestDrain() {
  impl_->drain_requested = true;
  std::lock_guard lock(impl_->mu);
  if (impl_->serving) impl_->serving->worker->RequestDrain();
  impl_->cv.notify_all();
}

void WorkerAgent::Stop() {
  impl_->stop = true;
  impl_->cv.notify_all();
}

int RunAgentProcess(const AgentOptions& options, const sigset_t& signals) {
  WorkerAgent agent(options);
  std::atomic<bool> done{false};
  std::jthread signal_thread([&] {
    int count = 0;
    while (!done) {
      timespec ts{0, 100'000'000};
      const int sig = sigtimedwait(&signals, nullptr, &ts);
      if (sig <= 0) continue;
      if (++count == 1) {
        ARCHI_LOG_INFO("agent: signal {}: draining (again to stop at once)", sig);
        agent.RequestDrain();
      } else {
        agent.Stop();
      }
    }
  });
  Status s = agent.Run();
  done = true;
  if (!s.ok()) {
    std::fprintf(stderr, "archi-worker: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace archi::coordinator
