// Out-of-tree consumer: two ranks as threads form a world through an embedded store and exchange
// one tensor. Exit code 0 only if the data arrived intact.
#include <cstdio>
#include <thread>
#include <vector>

#include "world/store_server.h"
#include "world/world_manager.h"

int main() {
  auto server = archi::StoreServer::Start(archi::StoreServerOptions{});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  std::shared_ptr<archi::Store> store = (*server)->store();
  archi::WorldManager a, b;
  archi::Status sb;
  std::thread t([&] { sb = b.InitializeWorld("pair", 1, 2, store); });
  archi::Status sa = a.InitializeWorld("pair", 0, 2, store);
  t.join();
  if (!sa.ok() || !sb.ok()) {
    std::fprintf(stderr, "init: %s / %s\n", sa.ToString().c_str(), sb.ToString().c_str());
    return 1;
  }
  std::vector<float> x = {1, 2, 3, 4}, y(4, 0);
  auto tx = archi::Tensor::View(x.data(), {4}, archi::DType::kF32).value();
  auto ty = archi::Tensor::View(y.data(), {4}, archi::DType::kF32).value();
  auto s = a.Send("pair", tx, 1);
  auto r = b.Recv("pair", ty, 0);
  auto d = archi::Deadline::AfterMs(5000);
  if (!s->Wait(d).ok() || !r->Wait(d).ok() || x != y) {
    std::fprintf(stderr, "exchange failed\n");
    return 1;
  }
  std::printf("consumer: world 'pair' exchanged 4 floats through the installed archi::archi\n");
  return 0;
}
