// archi-store: the rendezvous store as a standalone process.
//
//   archi-store [--listen HOST:PORT]
//
// Prints "archi-store listening on HOST:PORT" (the bound port, useful with port 0) on stdout once
// it accepts connections, and stops cleanly on SIGINT or SIGTERM. Exit codes: 0 after a signal, 1
// when it cannot listen, 2 for bad command-line arguments (CLI11's convention for --help is 0).
//
// Signals: SIGINT and SIGTERM are blocked in every thread (the mask is set before gRPC starts its
// threads, which inherit it) and received synchronously with sigwait() on the main thread, so no
// code runs in a signal handler.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <string>

#include "runtime/core/deadline.h"
#include "world/store_server.h"

int main(int argc, char** argv) {
  CLI::App app{"archi-store: the Archipelago rendezvous key-value store (gRPC)"};
  std::string listen = "127.0.0.1:29500";
  app.add_option("--listen", listen, "HOST:PORT to listen on (port 0 picks a free port)")
      ->capture_default_str();
  int64_t grace_ms = 2000;
  app.add_option("--shutdown-grace-ms", grace_ms,
                 "On SIGINT/SIGTERM, how long in-flight calls may finish "
                 "before being cancelled")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &signals, nullptr) != 0) {
    std::fprintf(stderr, "archi-store: cannot block SIGINT/SIGTERM\n");
    return 1;
  }

  archi::StoreServerOptions options;
  options.address = listen;
  options.shutdown_grace_ms = grace_ms;
  auto server = archi::StoreServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "archi-store: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("archi-store listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  std::fprintf(stderr, "archi-store: %s received, shutting down\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Shutdown(archi::Deadline::AfterMs(grace_ms));
  server->reset();
  return 0;
}
