#include "bench/p2p/p2p_transport.h"

#include "runtime/core/deadline.h"

namespace archi::bench {

WorldTransport::WorldTransport(WorldManager& manager, std::string world, int64_t wait_timeout_ms)
    : manager_(manager), world_(std::move(world)), wait_timeout_ms_(wait_timeout_ms) {}

Status WorldTransport::Send(const Tensor& t, int peer, uint32_t tag) {
  return manager_.Send(world_, t, peer, tag)->Wait(Deadline::AfterMs(wait_timeout_ms_));
}

Status WorldTransport::Recv(Tensor& t, int peer, uint32_t tag) {
  return manager_.Recv(world_, t, peer, tag)->Wait(Deadline::AfterMs(wait_timeout_ms_));
}

Status WorldTransport::SendBatch(const Tensor& t, int count, int peer, uint32_t tag) {
  works_.clear();
  for (int i = 0; i < count; ++i) works_.push_back(manager_.Send(world_, t, peer, tag));
  return WaitAll();
}

Status WorldTransport::RecvBatch(std::vector<Tensor>& bufs, int count, int peer, uint32_t tag) {
  works_.clear();
  for (int i = 0; i < count; ++i) works_.push_back(manager_.Recv(world_, bufs[i], peer, tag));
  return WaitAll();
}

Status WorldTransport::Exchange(const Tensor& t, std::vector<Tensor>& bufs, int count, int peer,
                                uint32_t tag) {
  works_.clear();
  for (int i = 0; i < count; ++i) works_.push_back(manager_.Recv(world_, bufs[i], peer, tag));
  for (int i = 0; i < count; ++i) works_.push_back(manager_.Send(world_, t, peer, tag));
  return WaitAll();
}

Status WorldTransport::Forward(std::vector<Tensor>& bufs, int count, int from, int to,
                               uint32_t tag) {
  recv_works_.clear();
  works_.clear();
  for (int i = 0; i < count; ++i) recv_works_.push_back(manager_.Recv(world_, bufs[i], from, tag));
  const Deadline d = Deadline::AfterMs(wait_timeout_ms_);
  Status first;
  for (int i = 0; i < count; ++i) {
    Status st = recv_works_[i]->Wait(d);
    if (!st.ok()) {
      if (first.ok()) first = st;
      continue;
    }
    if (first.ok()) works_.push_back(manager_.Send(world_, bufs[i], to, tag));
  }
  recv_works_.clear();
  Status sends = WaitAll();
  return first.ok() ? sends : first;
}

Status WorldTransport::WaitAll() {
  const Deadline d = Deadline::AfterMs(wait_timeout_ms_);
  Status first;
  // Wait for every op even after a failure: the buffers must not be reused while one is pending.
  for (auto& w : works_) {
    Status st = w->Wait(d);
    if (!st.ok() && first.ok()) first = st;
  }
  works_.clear();
  return first;
}

}  // namespace archi::bench
