// TLS and mutual TLS on the coordinator's gRPC address (gRPC SSL credentials from PEM files):
// certificates made by the openssl command line for this test (skipped without it).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "proto/coordinator.grpc.pb.h"
#include "runtime/coordinator/auth.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/core/memory_store.h"

namespace archi::coordinator {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;

class CoordinatorTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("archi_tls_test_" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    if (std::system("openssl version > /dev/null 2>&1") != 0) return;
    const std::string d = dir_->string();
    // Two CAs (the second one signs nothing we trust), a server certificate for 127.0.0.1 and a
    // client certificate, all signed by the first CA. EC keys: quick to make.
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; cd '" + d + "'; "
        "openssl req -x509 " + key + " -keyout ca.key -out ca.pem -days 2 -subj /CN=archi-test-ca; "
        "openssl req -x509 " + key + " -keyout other.key -out other.pem -days 2 -subj /CN=other; "
        "openssl req " + key + " -keyout server.key -out server.csr -subj /CN=127.0.0.1; "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile san.ext; "
        "openssl req " + key + " -keyout client.key -out client.csr -subj /CN=worker; "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2; "
        "echo 'not a certificate' > junk.pem";
    ok_ = std::system(("(" + script + ") > '" + d + "/openssl.log' 2>&1").c_str()) == 0;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  void SetUp() override {
    if (!ok_) GTEST_SKIP() << "openssl could not make test certificates (see its log)";
  }
  static std::string F(const std::string& name) { return (*dir_ / name).string(); }

  // Serves a coordinator with `server_tls`; returns its address.
  std::string Serve(const TlsFiles& server_tls) {
    auto store = std::make_shared<InMemoryStore>();
    executor::PipelinePlan plan;
    plan.name = "tls";
    plan.stages = {{0, 1}};
    auto c = Coordinator::Create({}, plan, store, "127.0.0.1:1");
    EXPECT_TRUE(c.ok()) << c.status();
    coord_ = std::move(*c);
    auto creds = MakeServerCredentials(server_tls);
    EXPECT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", *creds, &port);
    for (auto* s : coord_->services()) b.RegisterService(s);
    server_ = b.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    return "127.0.0.1:" + std::to_string(port);
  }
  void TearDown() override {
    if (coord_) coord_->Shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  static grpc::StatusCode Register(const std::string& addr,
                                   std::shared_ptr<grpc::ChannelCredentials> creds,
                                   const std::string& id) {
    auto stub = pb::Coordinator::NewStub(grpc::CreateChannel(addr, creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    pb::RegisterRequest q;
    q.set_worker_id(id);
    pb::RegisterResponse r;
    return stub->Register(&ctx, q, &r).error_code();
  }

  static fs::path* dir_;
  static bool ok_;
  std::unique_ptr<Coordinator> coord_;
  std::unique_ptr<grpc::Server> server_;
};

fs::path* CoordinatorTlsTest::dir_ = nullptr;
bool CoordinatorTlsTest::ok_ = false;

TEST_F(CoordinatorTlsTest, ServerTlsAcceptsOnlyClientsThatTrustItsCa) {
  const std::string addr = Serve({.cert = F("server.pem"), .key = F("server.key")});
  auto good = MakeChannelCredentials({.ca = F("ca.pem")});
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(Register(addr, *good, "w1"), grpc::StatusCode::OK);
  // Plaintext to a TLS port, or a client that trusts another CA: no connection, no state.
  EXPECT_EQ(Register(addr, grpc::InsecureChannelCredentials(), "w2"),
            grpc::StatusCode::UNAVAILABLE);
  auto other = MakeChannelCredentials({.ca = F("other.pem")});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(Register(addr, *other, "w3"), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(CoordinatorTlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  const std::string addr =
      Serve({.cert = F("server.pem"), .key = F("server.key"), .ca = F("ca.pem")});
  auto no_cert = MakeChannelCredentials({.ca = F("ca.pem")});
  ASSERT_TRUE(no_cert.ok());
  EXPECT_EQ(Register(addr, *no_cert, "w1"), grpc::StatusCode::UNAVAILABLE);
  // A certificate the server's CA did not sign (the other CA's own) is refused too.
  auto foreign =
      MakeChannelCredentials({.cert = F("other.pem"), .key = F("other.key"), .ca = F("ca.pem")});
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(Register(addr, *foreign, "w2"), grpc::StatusCode::UNAVAILABLE);
  auto with_cert =
      MakeChannelCredentials({.cert = F("client.pem"), .key = F("client.key"), .ca = F("ca.pem")});
  ASSERT_TRUE(with_cert.ok());
  EXPECT_EQ(Register(addr, *with_cert, "w3"), grpc::StatusCode::OK);
}

TEST_F(CoordinatorTlsTest, BadTlsFilesAreClearErrors) {
  auto s1 = MakeServerCredentials({.cert = F("server.pem")});
  EXPECT_EQ(s1.status().code(), StatusCode::kInvalidArgument) << s1.status();
  auto s2 = MakeServerCredentials({.cert = F("missing.pem"), .key = F("server.key")});
  EXPECT_EQ(s2.status().code(), StatusCode::kNotFound) << s2.status();
  EXPECT_NE(std::string(s2.status().message()).find("missing.pem"), std::string::npos);
  auto s3 = MakeServerCredentials({.cert = F("junk.pem"), .key = F("server.key")});
  EXPECT_EQ(s3.status().code(), StatusCode::kInvalidArgument) << s3.status();
  auto c1 = MakeChannelCredentials({.cert = F("client.pem"), .ca = F("ca.pem")});
  EXPECT_EQ(c1.status().code(), StatusCode::kInvalidArgument) << c1.status();
  EXPECT_TRUE(MakeChannelCredentials({}).ok());  // plaintext
}

}  // namespace
}  // namespace archi::coordinator
