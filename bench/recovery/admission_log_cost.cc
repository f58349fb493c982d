// archi-admission-log-cost: what the frontend's admission log (docs/coordinator.md, "Durable
// admission") costs per keyed request on this disk. Appends N records shaped like the frontend's
// (proto.AdmissionRecord: an id, 24 token ids, fingerprint, deadline) to a WriteAheadLog in DIR:
//   append      write(2) per record, what the frontend does under its lock;
//   group sync  one fdatasync after all of them, what its sync thread does every 50 ms;
//   per-record  append + fdatasync for each of M records: the reference a group commit avoids.
// Prints a markdown table with the ratio per-record / append. Deletes DIR's log when done.
//
//   archi-admission-log-cost [DIR] [N] [M]      (defaults: /tmp/archi_admission_cost 20000 200)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "proto/inference.pb.h"
#include "runtime/coordinator/wal.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  using Clock = std::chrono::steady_clock;
  const std::string dir = argc > 1 ? argv[1] : "/tmp/archi_admission_cost";
  const int n = argc > 2 ? std::max(1, std::atoi(argv[2])) : 20'000;
  const int m = argc > 3 ? std::max(1, std::atoi(argv[3])) : 200;
  std::error_code ec;
  fs::remove_all(dir, ec);
  archi::coordinator::WalContents contents;
  auto log = archi::coordinator::WriteAheadLog::Open(dir, &contents);
  if (!log.ok()) {
    std::fprintf(stderr, "archi-admission-log-cost: %s\n", log.status().ToString().c_str());
    return 1;
  }
  archi::proto::AdmissionRecord rec;
  auto* a = rec.add_admitted();
  a->set_request_id("rec-1234567");
  for (int i = 0; i < 24; ++i) a->add_ids(100 + i);
  a->set_fingerprint(0x1234567890abcdefull);
  a->set_deadline_unix_ms(1'795'622'347'196);
  a->set_admitted_unix_ms(1'795'622'327'196);
  const std::string payload = rec.SerializeAsString();
  auto us = [](Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); };
  auto check = [](const archi::Status& s) {
    if (!s.ok()) {
      std::fprintf(stderr, "archi-admission-log-cost: %s\n", s.ToString().c_str());
      std::exit(1);
    }
  };
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) check((*log)->Append(payload).status());
  const auto t1 = Clock::now();
  check((*log)->Sync());
  const auto t2 = Clock::now();
  for (int i = 0; i < m; ++i) {
    check((*log)->Append(payload).status());
    check((*log)->Sync());
  }
  const auto t3 = Clock::now();
  const double append_us = us(t1 - t0) / n, per_record_us = us(t3 - t2) / m;
  std::printf("| record bytes | append (write(2)) us/record, n=%d | one fdatasync after them, us | "
              "append + fdatasync per record, us, n=%d | per-record sync / append |\n"
              "| ---: | ---: | ---: | ---: | ---: |\n| %zu | %.2f | %.0f | %.0f | %.0fx |\n",
              n, m, payload.size(), append_us, us(t2 - t1), per_record_us,
              per_record_us / append_us);
  log->reset();
  fs::remove_all(dir, ec);
  return 0;
}
