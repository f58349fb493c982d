// Deadline: an absolute point on the steady clock. Every blocking call in Archipelago takes one.
// Deadline::Infinite() exists for the few places that must wait for a user decision, never for I/O.
#pragma once

#include <chrono>
#include <cstdint>

namespace archi {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

class Deadline {
 public:
  constexpr explicit Deadline(Clock::time_point at) : at_(at) {}
  static Deadline After(Clock::duration d) { return Deadline(Clock::now() + d); }
  static Deadline AfterMs(int64_t ms) { return After(Millis(ms)); }
  static constexpr Deadline Infinite() { return Deadline(Clock::time_point::max()); }
  static Deadline Past() { return Deadline(Clock::time_point::min()); }

  Clock::time_point time_point() const { return at_; }
  bool infinite() const { return at_ == Clock::time_point::max(); }
  bool Expired() const { return !infinite() && Clock::now() >= at_; }
  // Time left, clamped to [0, max]; Infinite() gives a very large value.
  Clock::duration Remaining() const {
    if (infinite()) return std::chrono::hours(24 * 365);
    const auto now = Clock::now();
    // Compare before subtracting: Past() minus now() would overflow.
    return at_ > now ? at_ - now : Clock::duration::zero();
  }
  Millis RemainingMs() const { return std::chrono::duration_cast<Millis>(Remaining()); }
  // The earlier of two deadlines.
  static Deadline Min(Deadline a, Deadline b) { return a.at_ < b.at_ ? a : b; }

 private:
  Clock::time_point at_;
};

inline double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace archi
