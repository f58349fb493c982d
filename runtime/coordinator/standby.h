// StandbyServices: what a standby archi-coordinator (--state-etcd, not the leader) serves on its
// address: the Coordinator and CoordinatorAdmin services, every call answered UNAVAILABLE with a
// message naming the current leader, so workers and the archi CLI (given every coordinator's
// address) move on to the next address, and a person reading the error knows where to look.
//
// Thread safety: SetLeader and the RPCs may run concurrently. The gRPC server must be shut down
// before this object is destroyed.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace grpc {
class Service;
}

namespace archi::coordinator {

class StandbyServices {
 public:
  StandbyServices();
  ~StandbyServices();
  // The leader's identity as its etcd key holds it ("" : unknown / none yet).
  void SetLeader(const std::string& leader);
  std::string Message() const;
  std::vector<grpc::Service*> services();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace archi::coordinator
