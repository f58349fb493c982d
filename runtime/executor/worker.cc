#include "runtime/executor/worker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/core/logging.h"
#include "runtime/executor/ready_file.h"
#include "world/store_client.h"

namespace archi::executor {

StageWorker::StageWorker(WorkerOptions options) : options_(std::move(options)) {
  if (options_.id.empty()) {
    options_.id = "s" + std::to_string(options_.stage) + "-" + std::to_string(getpid());
  }
}

StageWorker::~StageWorker() { Stop(); }

void StageWorker::RequestDrain() {
  drain_requested_ = true;
  cv_.notify_all();
}

void StageWorker::Stop() {
  stop_requested_ = true;
  cv_.notify_all();
}

void StageWorker::OnBatch(Batch&& batch, Origin origin) {
  {
    std::lock_guard lock(mu_);
    queue_.emplace_back(std::move(batch), std::move(origin));
  }
  cv_.notify_one();
}

void StageWorker::ComputeLoop(std::stop_token st) {
  const PayloadKind want = model_->input_kind();
  while (true) {
    std::pair<Batch, Origin> item;
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(100),
                   [&] { return !queue_.empty() || st.stop_requested(); });
      if (st.stop_requested()) return;
      if (queue_.empty()) continue;
      item = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Batch& in = item.first;
    const int64_t now = UnixMillis();
    bool forwarded = false;
    if (in.deadline_unix_ms != 0 && in.deadline_unix_ms < now) {
      // Every request of it has been answered DEADLINE_EXCEEDED by the frontend already.
      std::lock_guard lock(mu_);
      ++expired_;
      m_.expired.Increment();
    } else if (in.kind != want || in.stage != options_.stage) {
      ARCHI_LOG_ERROR(
          "worker {}: micro-batch {} is a {} for stage {}; this stage takes {} (dropped)",
          options_.id, in.batch_id, PayloadKindName(in.kind), in.stage, PayloadKindName(want));
    } else {
      auto lengths = Tensor::Empty({static_cast<int64_t>(in.lengths.size())}, DType::kI32);
      Result<Tensor> out = lengths.status();
      if (lengths.ok()) {
        std::copy(in.lengths.begin(), in.lengths.end(), lengths->data_as<int32_t>());
        const auto t0 = std::chrono::steady_clock::now();
        out = model_->Run(in.payload, *lengths);
        if (options_.extra_compute_ms > 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(options_.extra_compute_ms));
        }
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        m_.compute_seconds.Observe(secs);
        std::lock_guard lock(mu_);
        busy_seconds_ += secs;
        if (compute_ms_ring_.size() < 256) {
          compute_ms_ring_.push_back(secs * 1e3);
        } else {
          compute_ms_ring_[ring_next_] = secs * 1e3;
          ring_next_ = (ring_next_ + 1) % compute_ms_ring_.size();
        }
      }
      if (!out.ok()) {
        m_.failed.Increment();
        ARCHI_LOG_ERROR("worker {}: micro-batch {} failed: {} (dropped)", options_.id, in.batch_id,
                        out.status().ToString());
      } else {
        Batch next;
        next.batch_id = in.batch_id;
        next.attempt = in.attempt;
        next.stage = options_.stage + 1;
        next.deadline_unix_ms = in.deadline_unix_ms;
        next.request_ids = std::move(in.request_ids);
        next.lengths = std::move(in.lengths);
        next.kind = model_->output_kind();
        next.payload = std::move(*out);
        node_->Forward(std::move(next), std::move(item.second));
        forwarded = true;
        m_.batches.Increment();
      }
    }
    if (!forwarded) node_->Ack(item.second);
    std::lock_guard lock(mu_);
    busy_ = false;
    ++processed_;
  }
}

void StageWorker::InitMetrics() {
  const Labels l = {{"pipeline", options_.pipeline},
                    {"stage", std::to_string(options_.stage)},
                    {"member", options_.id}};
  Metrics& m = *metrics_;
  m_.batches =
      m.AddCounter("archi_worker_batches_total", "micro-batches computed and forwarded", l);
  m_.expired = m.AddCounter("archi_worker_expired_batches_total",
                            "micro-batches dropped because every request was past its deadline", l);
  m_.failed = m.AddCounter("archi_worker_failed_batches_total",
                           "micro-batches whose compute failed or that did not fit the stage", l);
  m_.resent = m.AddCounter("archi_node_resent_batches_total",
                           "micro-batches re-sent after a downstream link broke", l);
  m_.links_broken = m.AddCounter("archi_node_links_broken_total",
                                 "links to neighbours that broke without a drain", l);
  m_.compute_seconds =
      m.AddHistogram("archi_worker_compute_seconds", "compute time of one micro-batch",
                     Metrics::LatencyBuckets(), l);
  m_.queue_depth = m.AddGauge("archi_worker_queue_depth", "micro-batches waiting for compute", l);
  m_.inflight = m.AddGauge("archi_node_inflight_batches",
                           "micro-batches sent downstream and not yet acknowledged", l);
  m_.pending = m.AddGauge("archi_node_pending_batches",
                          "micro-batches waiting for a downstream link with credit", l);
  m_.links = m.AddGauge("archi_node_links", "links to neighbours that are up", l);
}

void StageWorker::UpdateMetrics() {
  const NodeStats s = node_->stats();
  m_.inflight.Set(static_cast<double>(s.inflight));
  m_.pending.Set(static_cast<double>(s.pending));
  m_.links.Set(static_cast<double>(node_->links().size()));
  if (s.batches_resent > last_stats_.batches_resent) {
    m_.resent.Increment(static_cast<double>(s.batches_resent - last_stats_.batches_resent));
  }
  if (s.links_broken > last_stats_.links_broken) {
    m_.links_broken.Increment(static_cast<double>(s.links_broken - last_stats_.links_broken));
  }
  last_stats_ = s;
  std::lock_guard lock(mu_);
  m_.queue_depth.Set(static_cast<double>(queue_.size()));
}

Status StageWorker::Run() {
  ARCHI_RETURN_IF_ERROR(ValidateMemberId(options_.id));
  if (!options_.metrics_listen.empty()) {
    ARCHI_ASSIGN_OR_RETURN(metrics_, Metrics::Serve(options_.metrics_listen));
    ARCHI_LOG_INFO("worker {}: metrics on http://{}/metrics", options_.id, metrics_->address());
  }
  InitMetrics();
  ARCHI_ASSIGN_OR_RETURN(auto store,
                         StoreClient::Connect(options_.store_address, Deadline::AfterMs(10'000),
                                              options_.store_credential));
  const std::string plan_key = PlanKey(options_.pipeline);
  Status waited = store->Wait({plan_key}, Deadline::AfterMs(options_.plan_wait_ms));
  if (!waited.ok()) {
    return Status(waited.code(), "no plan for pipeline '" + options_.pipeline +
                                     "' in the store at " + options_.store_address + ": " +
                                     std::string(waited.message()));
  }
  ARCHI_ASSIGN_OR_RETURN(std::string plan_json, store->Get(plan_key, Deadline::AfterMs(5000)));
  ARCHI_ASSIGN_OR_RETURN(plan_, PipelinePlan::FromJson(plan_json));
  if (options_.stage < 0 || options_.stage >= plan_.num_stages()) {
    return InvalidArgumentError("stage " + std::to_string(options_.stage) + " outside the plan's " +
                                std::to_string(plan_.num_stages()) + " stages");
  }
  const auto range = plan_.stages[static_cast<size_t>(options_.stage)];
  const auto t0 = std::chrono::steady_clock::now();
  ARCHI_ASSIGN_OR_RETURN(model_, StageModel::Load(plan_.model_dir, range, options_.threads));
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ARCHI_LOG_INFO("worker {}: stage {} layers [{}, {}) of {} loaded in {:.0f} ms", options_.id,
                 options_.stage, range.begin, range.end, plan_.model_dir, load_ms);

  NodeOptions no;
  no.incarnation = options_.incarnation;
  no.on_link_broken = options_.on_link_broken;
  no.pipeline = plan_.name;
  no.id = options_.id;
  no.kind = options_.kind;
  no.stage = options_.stage;
  no.num_stages = plan_.num_stages();
  no.max_inflight_per_link = plan_.max_inflight_per_link;
  no.store = store;
  no.plan_json = plan_json;
  node_ = std::make_unique<PipelineNode>(
      no, [this](Batch&& b, Origin o) { OnBatch(std::move(b), std::move(o)); });
  ARCHI_RETURN_IF_ERROR(node_->Start());
  node_started_ = true;
  std::jthread compute([this](std::stop_token st) { ComputeLoop(st); });

  bool ready_written = false;
  Status result = Status::Ok();
  bool drain_begun = false;
  uint64_t ticks = 0;
  while (true) {
    if (stop_requested_) break;
    if (node_->fenced()) {
      result = AbortedError("worker " + options_.id +
                            " was fenced (declared gone, or the plan changed; see the log)");
      break;
    }
    if (drain_requested_ && !drain_begun) {
      drain_begun = true;
      Status st = node_->BeginDrain();
      if (!st.ok())
        ARCHI_LOG_WARN("worker {}: cannot mark draining: {}", options_.id, st.ToString());
      ARCHI_LOG_INFO("worker {}: draining", options_.id);
    }
    if (node_->draining()) {
      if (!drain_begun) {
        drain_begun = true;
        ARCHI_LOG_INFO("worker {}: draining (admin request)", options_.id);
      }
      bool idle;
      {
        std::lock_guard lock(mu_);
        idle = queue_.empty() && !busy_;
      }
      if (idle && node_->Drained()) {
        ARCHI_LOG_INFO("worker {}: drained after {} micro-batches", options_.id, processed_);
        break;
      }
    }
    if (!ready_written && !options_.ready_file.empty()) {
      auto members = store->Get(MembersPrefix(plan_.name) + options_.id, Deadline::AfterMs(1000));
      if (members.ok()) {
        auto m = MemberInfo::FromJson(*members);
        if (m.ok() && m->state == "ready") {
          nlohmann::json j = {{"id", options_.id},
                              {"pid", getpid()},
                              {"stage", options_.stage},
                              {"ready_unix_ms", m->ready_unix_ms},
                              {"metrics", metrics_->address()}};
          if (Status st = WriteFileAtomically(options_.ready_file, j.dump()); !st.ok()) {
            ARCHI_LOG_WARN("worker {}: {}", options_.id, st.ToString());
          }
          ready_written = true;
          ARCHI_LOG_INFO("worker {}: ready", options_.id);
        }
      }
    }
    if (++ticks % 10 == 0) UpdateMetrics();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  compute.request_stop();
  cv_.notify_all();
  compute.join();
  node_started_ = false;
  node_->Stop();
  return result;
}

void StageWorker::DropPeer(const std::string& id, const std::string& incarnation,
                           const std::string& why) {
  if (node_started_) node_->DropPeer(id, incarnation, why);
}

WorkerSnapshot StageWorker::Snapshot() const {
  WorkerSnapshot s;
  s.state = "loading";
  if (node_started_) {
    s.state = node_->state();
    const NodeStats ns = node_->stats();
    s.resent = ns.batches_resent;
    s.inflight = ns.inflight;
    for (const auto& l : node_->links()) s.links.push_back(l.peer_id + "." + l.peer_incarnation);
  }
  std::vector<double> ms;
  {
    std::lock_guard lock(mu_);
    s.queue_depth = queue_.size();
    s.processed = processed_;
    s.busy_seconds = busy_seconds_;
    ms = compute_ms_ring_;
  }
  if (!ms.empty()) {
    std::sort(ms.begin(), ms.end());
    s.compute_p50_ms = ms[ms.size() / 2];
    s.compute_p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  }
  return s;
}

}  // namespace archi::executor
