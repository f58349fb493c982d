// The one file of archi-bench that knows whether MPI is compiled in.
#include "bench/p2p/mpi_job.h"

#include <algorithm>
#include <cstdio>
#include <climits>
#include <cstdlib>
#include <vector>

#include "archi/config.h"
#include "world/store_client.h"

#if ARCHI_HAVE_MPI
#include <mpi.h>
#endif

namespace archi::bench {

#if ARCHI_HAVE_MPI

namespace {

Status MpiError(const char* what, int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return InternalError(std::string(what) + ": " + std::string(msg, static_cast<size_t>(len)));
}

Status CheckCount(const Tensor& t) {
  if (t.nbytes() > static_cast<size_t>(INT_MAX)) {
    return InvalidArgumentError("message of " + std::to_string(t.nbytes()) +
                                " bytes too large for one MPI call");
  }
  return Status::Ok();
}

class MpiTransport final : public P2PTransport {
 public:
  std::string name() const override { return "Open MPI"; }

  Status Send(const Tensor& t, int peer, uint32_t tag) override {
    ARCHI_RETURN_IF_ERROR(CheckCount(t));
    int rc = MPI_Send(t.data(), static_cast<int>(t.nbytes()), MPI_BYTE, peer,
                      static_cast<int>(tag), MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? Status::Ok() : MpiError("MPI_Send", rc);
  }

  Status Recv(Tensor& t, int peer, uint32_t tag) override {
    ARCHI_RETURN_IF_ERROR(CheckCount(t));
    int rc = MPI_Recv(t.data(), static_cast<int>(t.nbytes()), MPI_BYTE, peer,
                      static_cast<int>(tag), MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    return rc == MPI_SUCCESS ? Status::Ok() : MpiError("MPI_Recv", rc);
  }

  Status SendBatch(const Tensor& t, int count, int peer, uint32_t tag) override {
    ARCHI_RETURN_IF_ERROR(CheckCount(t));
    requests_.resize(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      int rc = MPI_Isend(t.data(), static_cast<int>(t.nbytes()), MPI_BYTE, peer,
                         static_cast<int>(tag), MPI_COMM_WORLD, &requests_[i]);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Isend", rc);
    }
    int rc = MPI_Waitall(count, requests_.data(), MPI_STATUSES_IGNORE);
    return rc == MPI_SUCCESS ? Status::Ok() : MpiError("MPI_Waitall", rc);
  }

  Status RecvBatch(std::vector<Tensor>& bufs, int count, int peer, uint32_t tag) override {
    requests_.resize(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      ARCHI_RETURN_IF_ERROR(CheckCount(bufs[i]));
      int rc = MPI_Irecv(bufs[i].data(), static_cast<int>(bufs[i].nbytes()), MPI_BYTE, peer,
                         static_cast<int>(tag), MPI_COMM_WORLD, &requests_[i]);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Irecv", rc);
    }
    int rc = MPI_Waitall(count, requests_.data(), MPI_STATUSES_IGNORE);
    return rc == MPI_SUCCESS ? Status::Ok() : MpiError("MPI_Waitall", rc);
  }

  Status Exchange(const Tensor& t, std::vector<Tensor>& bufs, int count, int peer,
                  uint32_t tag) override {
    ARCHI_RETURN_IF_ERROR(CheckCount(t));
    requests_.resize(static_cast<size_t>(2 * count));
    for (int i = 0; i < count; ++i) {
      ARCHI_RETURN_IF_ERROR(CheckCount(bufs[i]));
      int rc = MPI_Irecv(bufs[i].data(), static_cast<int>(bufs[i].nbytes()), MPI_BYTE, peer,
                         static_cast<int>(tag), MPI_COMM_WORLD, &requests_[i]);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Irecv", rc);
    }
    for (int i = 0; i < count; ++i) {
      int rc = MPI_Isend(t.data(), static_cast<int>(t.nbytes()), MPI_BYTE, peer,
                         static_cast<int>(tag), MPI_COMM_WORLD, &requests_[count + i]);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Isend", rc);
    }
    int rc = MPI_Waitall(2 * count, requests_.data(), MPI_STATUSES_IGNORE);
    return rc == MPI_SUCCESS ? Status::Ok() : MpiError("MPI_Waitall", rc);
  }

  Status Forward(std::vector<Tensor>& bufs, int count, int from, int to, uint32_t tag) override {
    requests_.resize(static_cast<size_t>(2 * count));
    for (int i = 0; i < count; ++i) {
      ARCHI_RETURN_IF_ERROR(CheckCount(bufs[i]));
      int rc = MPI_Irecv(bufs[i].data(), static_cast<int>(bufs[i].nbytes()), MPI_BYTE, from,
                         static_cast<int>(tag), MPI_COMM_WORLD, &requests_[i]);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Irecv", rc);
    }
    for (int i = 0; i < count; ++i) {
      int rc = MPI_Wait(&requests_[i], MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Wait", rc);
      rc = MPI_Isend(bufs[i].data(), static_cast<int>(bufs[i].nbytes()), MPI_BYTE, to,
                     static_cast<int>(tag), MPI_COMM_WORLD, &requests_[count + i]);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Isend", rc);
    }
    int rc = MPI_Waitall(count, requests_.data() + count, MPI_STATUSES_IGNORE);
    return rc == MPI_SUCCESS ? Status::Ok() : MpiError("MPI_Waitall", rc);
  }

 private:
  std::vector<MPI_Request> requests_;
};

class MpiJobImpl final : public MpiJob {
 public:
  MpiJobImpl() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Errors come back as return codes (and become Status) instead of aborting inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
      MPI_Comm_rank(node, &local_rank_);
      MPI_Comm_free(&node);
    }
  }
  ~MpiJobImpl() override { MPI_Finalize(); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  std::string library_version() const override {
    char buf[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(buf, &len);
    buf[std::min(len, MPI_MAX_LIBRARY_VERSION_STRING - 1)] = '\0';
    std::string v(buf);  // C string: len may count the terminator
    auto nl = v.find('\n');
    if (nl != std::string::npos) v.resize(nl);
    while (!v.empty() && (v.back() == ',' || v.back() == ' ')) v.pop_back();
    return v;
  }

  void Barrier() override { MPI_Barrier(MPI_COMM_WORLD); }
  void Broadcast(void* data, size_t bytes, int root) override {
    MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, MPI_COMM_WORLD);
  }
  double Max(double value) override {
    double out = value;
    MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return out;
  }
  [[noreturn]] void Abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

  std::unique_ptr<P2PTransport> Transport() override { return std::make_unique<MpiTransport>(); }

 private:
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
};

}  // namespace

Result<std::unique_ptr<MpiJob>> MpiJob::Init(int* argc, char*** argv) {
  int provided = 0;
  int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return UnavailableError("MPI_Init_thread failed");
  return std::unique_ptr<MpiJob>(new MpiJobImpl());
}

#else  // !ARCHI_HAVE_MPI

Result<std::unique_ptr<MpiJob>> MpiJob::Init(int*, char***) {
  return UnimplementedError(
      "this archi-bench was built without MPI (ARCHI_HAVE_MPI=0): the p2p benchmark needs Open "
      "MPI both to launch its two ranks and as the same-host reference. Install libopenmpi-dev "
      "and reconfigure with -DARCHI_WITH_MPI=ON (or AUTO)");
}

#endif  // ARCHI_HAVE_MPI

Result<std::shared_ptr<Store>> JobStore(MpiJob& job, std::unique_ptr<StoreServer>* server) {
  char address[256] = {0};
  std::shared_ptr<Store> store;
  if (job.rank() == 0) {
    ARCHI_ASSIGN_OR_RETURN(*server, StoreServer::Start(StoreServerOptions{}));
    std::snprintf(address, sizeof(address), "%s", (*server)->address().c_str());
    store = (*server)->store();
  }
  job.Broadcast(address, sizeof(address), 0);
  if (job.rank() != 0) {
    ARCHI_ASSIGN_OR_RETURN(store, StoreClient::Connect(address, Deadline::AfterMs(10'000)));
  }
  return store;
}

}  // namespace archi::bench
