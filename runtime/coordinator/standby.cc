#include "runtime/coordinator/standby.h"

#include <grpcpp/grpcpp.h>

#include <mutex>

#include "proto/coordinator.grpc.pb.h"

namespace archi::coordinator {

namespace pb = archi::proto;

struct StandbyServices::Impl {
  mutable std::mutex mu;
  std::string leader;

  grpc::Status Refuse() const { return grpc::Status(grpc::StatusCode::UNAVAILABLE, Message()); }
  std::string Message() const {
    std::lock_guard lock(mu);
    return "this archi-coordinator is a standby; the leader is " +
           (leader.empty() ? std::string("being elected (try again)") : leader);
  }

  class Worker final : public pb::Coordinator::CallbackService {
   public:
    explicit Worker(Impl* s) : s_(s) {}
    grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const pb::RegisterRequest*,
                                       pb::RegisterResponse*) override {
      auto* r = ctx->DefaultReactor();
      r->Finish(s_->Refuse());
      return r;
    }
    grpc::ServerBidiReactor<pb::WorkerMessage, pb::CoordinatorMessage>* Session(
        grpc::CallbackServerContext*) override {
      class Refused final
          : public grpc::ServerBidiReactor<pb::WorkerMessage, pb::CoordinatorMessage> {
       public:
        explicit Refused(const grpc::Status& s) { Finish(s); }
        void OnDone() override { delete this; }
      };
      return new Refused(s_->Refuse());
    }

   private:
    Impl* s_;
  };

  class Admin final : public pb::CoordinatorAdmin::CallbackService {
   public:
    explicit Admin(Impl* s) : s_(s) {}
    grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx) {
      auto* r = ctx->DefaultReactor();
      r->Finish(s_->Refuse());
      return r;
    }
    grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx,
                                     const pb::CoordinatorStatusRequest*,
                                     pb::CoordinatorStatusResponse*) override {
      return Refuse(ctx);
    }
    grpc::ServerUnaryReactor* Scale(grpc::CallbackServerContext* ctx, const pb::ScaleRequest*,
                                    pb::ScaleResponse*) override {
      return Refuse(ctx);
    }
    grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx, const pb::DrainWorkerRequest*,
                                    pb::DrainWorkerResponse*) override {
      return Refuse(ctx);
    }
    grpc::ServerUnaryReactor* SetPolicy(grpc::CallbackServerContext* ctx,
                                        const pb::SetPolicyRequest*,
                                        pb::SetPolicyResponse*) override {
      return Refuse(ctx);
    }
    grpc::ServerUnaryReactor* Events(grpc::CallbackServerContext* ctx, const pb::EventsRequest*,
                                     pb::EventsResponse*) override {
      return Refuse(ctx);
    }

   private:
    Impl* s_;
  };

  Worker worker{this};
  Admin admin{this};
};

StandbyServices::StandbyServices() : impl_(std::make_unique<Impl>()) {}
StandbyServices::~StandbyServices() = default;

void StandbyServices::SetLeader(const std::string& leader) {
  std::lock_guard lock(impl_->mu);
  impl_->leader = leader;
}

std::string StandbyServices::Message() const { return impl_->Message(); }

std::vector<grpc::Service*> StandbyServices::services() { return {&impl_->worker, &impl_->admin}; }

}  // namespace archi::coordinator
