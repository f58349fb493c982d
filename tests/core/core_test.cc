// Unit tests for runtime/core: Status/Result and their macros, Deadline, params, Tensor,
// InMemoryStore (blocking and WatchAll) and PrefixStore.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core/deadline.h"
#include "runtime/core/memory_store.h"
#include "runtime/core/params.h"
#include "runtime/core/status.h"
#include "runtime/core/store.h"
#include "runtime/core/tensor.h"

namespace archi {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// ---------------------------------------------------------------------------------------------
// Status / Result

TEST(StatusTest, OkIsDefaultAndCheap) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_TRUE(Status::Ok().ok());
  // An OK code with a message is still OK and drops the message.
  Status ok_with_msg(StatusCode::kOk, "ignored");
  EXPECT_TRUE(ok_with_msg.ok());
  EXPECT_EQ(ok_with_msg.message(), "");
}

TEST(StatusTest, ErrorCarriesCodeAndMessage) {
  Status s = NotFoundError("key 'x' not found");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "key 'x' not found");
  EXPECT_EQ(s.ToString(), "NOT_FOUND: key 'x' not found");
  std::ostringstream os;
  os << s;
  EXPECT_EQ(os.str(), s.ToString());
}

TEST(StatusTest, CodesMatchGrpcNumbering) {
  // Values fixed by the gRPC canonical code list (grpc::StatusCode).
  EXPECT_EQ(static_cast<int>(StatusCode::kCancelled), 1);
  EXPECT_EQ(static_cast<int>(StatusCode::kInvalidArgument), 3);
  EXPECT_EQ(static_cast<int>(StatusCode::kDeadlineExceeded), 4);
  EXPECT_EQ(static_cast<int>(StatusCode::kNotFound), 5);
  EXPECT_EQ(static_cast<int>(StatusCode::kFailedPrecondition), 9);
  EXPECT_EQ(static_cast<int>(StatusCode::kAborted), 10);
  EXPECT_EQ(static_cast<int>(StatusCode::kInternal), 13);
  EXPECT_EQ(static_cast<int>(StatusCode::kUnavailable), 14);
  EXPECT_EQ(static_cast<int>(StatusCode::kUnauthenticated), 16);
  for (int c = 0; c <= 16; ++c) {
    EXPECT_NE(StatusCodeName(static_cast<StatusCode>(c)), "UNKNOWN_CODE") << c;
  }
  EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(99)), "UNKNOWN_CODE");
}

TEST(StatusTest, ConvenienceConstructors) {
  EXPECT_EQ(CancelledError("").code(), StatusCode::kCancelled);
  EXPECT_EQ(InvalidArgumentError("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DeadlineExceededError("").code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(NotFoundError("").code(), StatusCode::kNotFound);
  EXPECT_EQ(AlreadyExistsError("").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(FailedPreconditionError("").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(AbortedError("").code(), StatusCode::kAborted);
  EXPECT_EQ(OutOfRangeError("").code(), StatusCode::kOutOfRange);
  EXPECT_EQ(UnimplementedError("").code(), StatusCode::kUnimplemented);
  EXPECT_EQ(InternalError("").code(), StatusCode::kInternal);
  EXPECT_EQ(UnavailableError("").code(), StatusCode::kUnavailable);
  EXPECT_EQ(PermissionDeniedError("").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(UnauthenticatedError("").code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(ResourceExhaustedError("").code(), StatusCode::kResourceExhausted);
}

TEST(StatusTest, CopyMoveAndEquality) {
  Status a = AbortedError("epoch changed");
  Status b = a;  // deep copy
  EXPECT_EQ(a, b);
  b = UnavailableError("other");
  EXPECT_NE(a.code(), b.code());
  EXPECT_EQ(a.message(), "epoch changed");  // the copy did not alias
  Status c = std::move(b);
  EXPECT_EQ(c.code(), StatusCode::kUnavailable);
  a = a;  // self-assignment keeps the value
  EXPECT_EQ(a.message(), "epoch changed");
  EXPECT_FALSE(Status() == a);
  EXPECT_TRUE(Status() == Status::Ok());
}

TEST(StatusTest, WithContextPrefixes) {
  Status s = InternalError("boom").WithContext("world w0");
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "world w0: boom");
  EXPECT_TRUE(Status::Ok().WithContext("ignored").ok());
}

TEST(ResultTest, ValueAndError) {
  Result<int> r = 42;
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.has_value());
  EXPECT_TRUE(static_cast<bool>(r));
  EXPECT_EQ(*r, 42);
  EXPECT_EQ(r.value(), 42);
  EXPECT_TRUE(r.status().ok());
  EXPECT_EQ(r.value_or(7), 42);

  Result<int> e = NotFoundError("nope");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e.error().message(), "nope");
  EXPECT_EQ(e.value_or(7), 7);
}

TEST(ResultTest, OkStatusIsABug) {
  Result<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(ResultTest, MoveOnlyValue) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 5);
  Result<std::string> s = std::string("abc");
  EXPECT_EQ(s->size(), 3u);
}

Status FailWith(StatusCode code) { return Status(code, "inner"); }
Result<int> IntOr(bool ok) {
  if (ok) return 3;
  return InvalidArgumentError("bad int");
}

Status UseReturnIfError(bool fail) {
  // Temporaries of both kinds: the macro must not keep a reference to a dead temporary.
  ARCHI_RETURN_IF_ERROR(FailWith(fail ? StatusCode::kAborted : StatusCode::kOk));
  ARCHI_RETURN_IF_ERROR(IntOr(true));
  return Status::Ok();
}

Status UseReturnIfErrorResult() {
  ARCHI_RETURN_IF_ERROR(IntOr(false));
  return Status::Ok();
}

Result<int> UseAssignOrReturn(bool ok) {
  ARCHI_ASSIGN_OR_RETURN(int v, IntOr(ok));
  ARCHI_ASSIGN_OR_RETURN(int w, IntOr(true));  // two on one function: distinct temporaries
  return v + w;
}

TEST(MacroTest, ReturnIfErrorAddsFileLine) {
  EXPECT_TRUE(UseReturnIfError(false).ok());
  Status s = UseReturnIfError(true);
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  EXPECT_THAT(std::string(s.message()), StartsWith("core_test.cc:"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(": inner"));
  Status r = UseReturnIfErrorResult();
  EXPECT_EQ(r.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.message()), HasSubstr("bad int"));
}

TEST(MacroTest, AssignOrReturn) {
  Result<int> ok = UseAssignOrReturn(true);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 6);
  Result<int> bad = UseAssignOrReturn(false);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), StartsWith("core_test.cc:"));
}

// ---------------------------------------------------------------------------------------------
// Deadline

TEST(DeadlineTest, Basics) {
  EXPECT_TRUE(Deadline::Past().Expired());
  EXPECT_FALSE(Deadline::Infinite().Expired());
  EXPECT_TRUE(Deadline::Infinite().infinite());
  EXPECT_EQ(Deadline::Past().Remaining(), Clock::duration::zero());  // no overflow
  EXPECT_EQ(Deadline::AfterMs(-5).RemainingMs(), Millis(0));
  EXPECT_GT(Deadline::Infinite().Remaining(), std::chrono::hours(24));
  Deadline soon = Deadline::AfterMs(50), later = Deadline::AfterMs(5000);
  EXPECT_EQ(Deadline::Min(soon, later).time_point(), soon.time_point());
  EXPECT_EQ(Deadline::Min(later, Deadline::Infinite()).time_point(), later.time_point());
  EXPECT_LE(later.RemainingMs(), Millis(5000));
  EXPECT_GT(later.RemainingMs(), Millis(4000));
}

// ---------------------------------------------------------------------------------------------
// params

TEST(ParamsTest, ParseIntGoodAndBad) {
  EXPECT_EQ(*ParseInt("X", "42"), 42);
  EXPECT_EQ(*ParseInt("X", "-7"), -7);
  EXPECT_EQ(*ParseInt("X", "9223372036854775807"), INT64_MAX);
  for (const char* bad : {"", "abc", "12x", "1.5", "99999999999999999999"}) {
    auto r = ParseInt("ARCHI_X", bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("ARCHI_X")) << bad;
  }
}

TEST(ParamsTest, ParseDoubleGoodAndBad) {
  EXPECT_DOUBLE_EQ(*ParseDouble("X", "1.5"), 1.5);
  EXPECT_DOUBLE_EQ(*ParseDouble("X", "-2e3"), -2000.0);
  for (const char* bad : {"", "x1", "1.5.5", "1e999"}) {
    EXPECT_EQ(ParseDouble("X", bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParamsTest, ParseBool) {
  for (const char* t : {"1", "true", "TRUE", "yes", "On"}) EXPECT_TRUE(*ParseBool("X", t)) << t;
  for (const char* f : {"0", "false", "No", "off"}) EXPECT_FALSE(*ParseBool("X", f)) << f;
  for (const char* bad : {"", "2", "maybe"}) {
    EXPECT_EQ(ParseBool("X", bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParamsTest, EnvHelpersFallBackOnBadValues) {
  ::setenv("ARCHI_TEST_INT", "17", 1);
  EXPECT_EQ(EnvInt("ARCHI_TEST_INT", 3), 17);
  ::setenv("ARCHI_TEST_INT", "seventeen", 1);
  EXPECT_EQ(EnvInt("ARCHI_TEST_INT", 3), 3);
  ::setenv("ARCHI_TEST_INT", "500", 1);
  EXPECT_EQ(EnvInt("ARCHI_TEST_INT", 3, 0, 100), 3);  // out of range
  ::unsetenv("ARCHI_TEST_INT");
  EXPECT_EQ(EnvInt("ARCHI_TEST_INT", 3), 3);
  ::setenv("ARCHI_TEST_INT", "", 1);  // empty counts as unset
  EXPECT_EQ(EnvInt("ARCHI_TEST_INT", 4), 4);

  ::setenv("ARCHI_TEST_BOOL", "yes", 1);
  EXPECT_TRUE(EnvBool("ARCHI_TEST_BOOL", false));
  ::setenv("ARCHI_TEST_BOOL", "perhaps", 1);
  EXPECT_FALSE(EnvBool("ARCHI_TEST_BOOL", false));

  ::setenv("ARCHI_TEST_DOUBLE", "0.25", 1);
  EXPECT_DOUBLE_EQ(EnvDouble("ARCHI_TEST_DOUBLE", 1.0), 0.25);
  ::setenv("ARCHI_TEST_DOUBLE", "quarter", 1);
  EXPECT_DOUBLE_EQ(EnvDouble("ARCHI_TEST_DOUBLE", 1.0), 1.0);

  ::setenv("ARCHI_TEST_STRING", "hello", 1);
  EXPECT_EQ(EnvString("ARCHI_TEST_STRING", "dflt"), "hello");
  EXPECT_EQ(EnvString("ARCHI_TEST_UNSET_STRING", "dflt"), "dflt");

  auto names = EnvVariablesRead();
  for (const char* n : {"ARCHI_TEST_INT", "ARCHI_TEST_BOOL", "ARCHI_TEST_DOUBLE",
                        "ARCHI_TEST_STRING", "ARCHI_TEST_UNSET_STRING"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  for (const char* n :
       {"ARCHI_TEST_INT", "ARCHI_TEST_BOOL", "ARCHI_TEST_DOUBLE", "ARCHI_TEST_STRING"}) {
    ::unsetenv(n);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor

TEST(TensorTest, DTypes) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(DTypeSize(DType::kU8), 1u);
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64, DType::kU8}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(ParseDType("f64").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Device::Cpu().ToString(), "cpu");
  EXPECT_EQ(Device::Cuda(3).ToString(), "cuda:3");
  EXPECT_FALSE(Device::Cpu() == Device::Cuda(0));
}

TEST(TensorTest, ViewShapes) {
  float buf[24] = {};
  auto t = Tensor::View(buf, {2, 3, 4}, DType::kF32);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->numel(), 24);
  EXPECT_EQ(t->nbytes(), 96u);
  EXPECT_EQ(t->data(), buf);
  EXPECT_EQ(t->data_as<float>(), buf);
  EXPECT_EQ(t->ShapeString(), "[2, 3, 4]");
  EXPECT_TRUE(t->defined());
  EXPECT_TRUE(t->device().is_cpu());

  auto scalar = Tensor::View(buf, {}, DType::kI32);
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ(scalar->ShapeString(), "[]");

  auto cuda = Tensor::View(buf, {4}, DType::kF16, Device::Cuda(1));
  ASSERT_TRUE(cuda.ok());
  EXPECT_EQ(cuda->device(), Device::Cuda(1));
  EXPECT_EQ(cuda->nbytes(), 8u);
}

TEST(TensorTest, RejectsBadShapes) {
  float buf[4];
  auto neg = Tensor::View(buf, {2, -1}, DType::kF32);
  EXPECT_EQ(neg.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(neg.status().message()), HasSubstr("negative"));

  const int64_t big = int64_t{1} << 40;
  auto overflow = Tensor::View(buf, {big, big}, DType::kU8);
  EXPECT_EQ(overflow.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(overflow.status().message()), HasSubstr("overflow"));
  // Elements fit in int64 but bytes do not.
  auto bytes_overflow = Tensor::View(buf, {int64_t{1} << 61}, DType::kI64);
  EXPECT_EQ(bytes_overflow.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Tensor::Empty({INT64_MAX, 2}, DType::kU8).status().code(),
            StatusCode::kInvalidArgument);

  auto null_data = Tensor::View(nullptr, {3}, DType::kF32);
  EXPECT_EQ(null_data.status().code(), StatusCode::kInvalidArgument);
}

TEST(TensorTest, ZeroSize) {
  auto v = Tensor::View(nullptr, {0, 5}, DType::kF32);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->numel(), 0);
  EXPECT_EQ(v->nbytes(), 0u);
  EXPECT_TRUE(v->defined());
  // A zero anywhere makes the count 0 even next to a huge dimension.
  auto z = Tensor::View(nullptr, {INT64_MAX, 0}, DType::kF32);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->numel(), 0);
  auto e = Tensor::Empty({0}, DType::kF16);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->nbytes(), 0u);
  EXPECT_TRUE(e->defined());
}

TEST(TensorTest, DefaultIsUndefined) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_EQ(t.numel(), 0);
}

TEST(TensorTest, EmptyAndZerosOwnAlignedMemory) {
  auto z = Tensor::Zeros({3, 7}, DType::kI32);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->numel(), 21);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(z->data()) % 64, 0u);
  for (int i = 0; i < 21; ++i) EXPECT_EQ(z->data_as<int32_t>()[i], 0);
  Tensor copy = *z;  // shares the buffer
  copy.data_as<int32_t>()[0] = 9;
  EXPECT_EQ(z->data_as<int32_t>()[0], 9);
  auto e = Tensor::Empty({5}, DType::kBF16);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->nbytes(), 10u);
  EXPECT_NE(e->data(), nullptr);
}

// ---------------------------------------------------------------------------------------------
// InMemoryStore

Deadline Soon() { return Deadline::AfterMs(5000); }

// Completes a std::future from a WatchAll callback.
struct WatchResult {
  std::promise<Status> promise;
  std::future<Status> future = promise.get_future();
  InMemoryStore::WatchCallback Callback() {
    return [this](Status s) { promise.set_value(std::move(s)); };
  }
  bool Ready(std::chrono::milliseconds within) {
    return future.wait_for(within) == std::future_status::ready;
  }
};

TEST(InMemoryStoreTest, SetGetOverwriteDelete) {
  InMemoryStore s;
  EXPECT_EQ(s.Get("a", Soon()).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(s.Set("a", "1", Soon()).ok());
  EXPECT_EQ(*s.Get("a", Soon()), "1");
  ASSERT_TRUE(s.Set("a", "2", Soon()).ok());
  EXPECT_EQ(*s.Get("a", Soon()), "2");
  std::string binary("x\0y", 3);
  ASSERT_TRUE(s.Set(binary, binary, Soon()).ok());
  EXPECT_EQ(*s.Get(binary, Soon()), binary);
  EXPECT_EQ(s.size(), 2u);
  EXPECT_TRUE(*s.Delete("a", Soon()));
  EXPECT_FALSE(*s.Delete("a", Soon()));
  EXPECT_EQ(s.Get("a", Soon()).status().code(), StatusCode::kNotFound);
}

TEST(InMemoryStoreTest, Add) {
  InMemoryStore s;
  EXPECT_EQ(*s.Add("n", 5, Soon()), 5);  // absent counts as 0
  EXPECT_EQ(*s.Add("n", -7, Soon()), -2);
  EXPECT_EQ(*s.Get("n", Soon()), "-2");
  ASSERT_TRUE(s.Set("t", "hello", Soon()).ok());
  EXPECT_EQ(s.Add("t", 1, Soon()).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(s.Set("t", "12abc", Soon()).ok());
  EXPECT_EQ(s.Add("t", 1, Soon()).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(s.Set("max", std::to_string(INT64_MAX), Soon()).ok());
  EXPECT_EQ(s.Add("max", 1, Soon()).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(*s.Get("max", Soon()), std::to_string(INT64_MAX));  // unchanged
}

TEST(InMemoryStoreTest, CompareSet) {
  InMemoryStore s;
  // Absent matches an empty `expected`.
  EXPECT_EQ(*s.CompareSet("k", "", "v1", Soon()), "v1");
  EXPECT_EQ(*s.Get("k", Soon()), "v1");
  // Mismatch: unchanged, returns the current value.
  EXPECT_EQ(*s.CompareSet("k", "nope", "v2", Soon()), "v1");
  EXPECT_EQ(*s.Get("k", Soon()), "v1");
  EXPECT_EQ(*s.CompareSet("k", "v1", "v2", Soon()), "v2");
  // Absent with a non-empty `expected`: no change, returns "".
  EXPECT_EQ(*s.CompareSet("other", "x", "y", Soon()), "");
  EXPECT_EQ(s.Get("other", Soon()).status().code(), StatusCode::kNotFound);
}

TEST(InMemoryStoreTest, ListAndDeletePrefix) {
  InMemoryStore s;
  for (const char* k : {"w/2", "w/1", "w/10", "x/1", "w"}) ASSERT_TRUE(s.Set(k, k, Soon()).ok());
  auto kv = s.List("w/", Soon());
  ASSERT_TRUE(kv.ok());
  ASSERT_EQ(kv->size(), 3u);
  EXPECT_EQ((*kv)[0].first, "w/1");
  EXPECT_EQ((*kv)[1].first, "w/10");
  EXPECT_EQ((*kv)[2].first, "w/2");
  EXPECT_EQ((*kv)[2].second, "w/2");
  EXPECT_EQ(s.List("", Soon())->size(), 5u);
  EXPECT_EQ(s.List("zzz", Soon())->size(), 0u);
  EXPECT_EQ(*s.DeletePrefix("w/", Soon()), 3);
  EXPECT_EQ(*s.DeletePrefix("w/", Soon()), 0);
  EXPECT_EQ(s.size(), 2u);
}

TEST(InMemoryStoreTest, WaitPresentTimeoutAndWake) {
  InMemoryStore s;
  ASSERT_TRUE(s.Set("a", "1", Soon()).ok());
  EXPECT_TRUE(s.Wait({"a"}, Deadline::Past()).ok());  // present: OK even past the deadline
  EXPECT_TRUE(s.Wait({}, Soon()).ok());

  auto t0 = Clock::now();
  Status st = s.Wait({"a", "missing"}, Deadline::AfterMs(100));
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(st.message()), HasSubstr("missing"));
  EXPECT_GE(MsSince(t0), 95);
  EXPECT_LT(MsSince(t0), 3000);

  std::thread writer([&] {
    // Set only once the waiter is blocked would need a hook; any order is correct here.
    ASSERT_TRUE(s.Set("b", "2", Soon()).ok());
  });
  EXPECT_TRUE(s.Wait({"a", "b"}, Deadline::AfterMs(5000)).ok());
  writer.join();
}

TEST(InMemoryStoreTest, WatchAllCompletesAtOnceWhenPresent) {
  InMemoryStore s;
  ASSERT_TRUE(s.Set("a", "1", Soon()).ok());
  bool called = false;
  s.WatchAll({"a"}, Soon(), [&](Status st) {
    EXPECT_TRUE(st.ok());
    called = true;
  });
  EXPECT_TRUE(called);  // synchronously, before WatchAll returned
  EXPECT_EQ(s.pending_watches(), 0u);
}

TEST(InMemoryStoreTest, WatchAllSucceedsOnWrite) {
  WatchResult w;
  InMemoryStore s;
  s.WatchAll({"a", "b"}, Soon(), w.Callback());
  EXPECT_EQ(s.pending_watches(), 1u);
  ASSERT_TRUE(s.Set("a", "1", Soon()).ok());
  EXPECT_FALSE(w.Ready(std::chrono::milliseconds(0)));
  ASSERT_TRUE(s.Add("b", 1, Soon()).ok());  // Add also creates keys
  ASSERT_TRUE(w.Ready(std::chrono::seconds(5)));
  EXPECT_TRUE(w.future.get().ok());
  EXPECT_EQ(s.pending_watches(), 0u);

  WatchResult cas;
  s.WatchAll({"c"}, Soon(), cas.Callback());
  ASSERT_TRUE(s.CompareSet("c", "", "x", Soon()).ok());
  ASSERT_TRUE(cas.Ready(std::chrono::seconds(5)));
  EXPECT_TRUE(cas.future.get().ok());
}

TEST(InMemoryStoreTest, WatchAllDeadline) {
  WatchResult w;
  InMemoryStore s;
  auto t0 = Clock::now();
  s.WatchAll({"never"}, Deadline::AfterMs(80), w.Callback());
  ASSERT_TRUE(w.Ready(std::chrono::seconds(5)));
  EXPECT_EQ(w.future.get().code(), StatusCode::kDeadlineExceeded);
  EXPECT_GE(MsSince(t0), 75);

  WatchResult past;
  s.WatchAll({"never"}, Deadline::Past(), past.Callback());
  ASSERT_TRUE(past.Ready(std::chrono::milliseconds(0)));
  EXPECT_EQ(past.future.get().code(), StatusCode::kDeadlineExceeded);
}

// A watch with an early deadline added while the timer sleeps towards a later one must still fire
// on time (regression: the timer only woke for its current deadline). Several rounds, so that at
// least some early watches arrive while the timer already sleeps towards the late one.
TEST(InMemoryStoreTest, WatchAllEarlierDeadlineWakesTimer) {
  WatchResult late, rounds[3];  // declared before the store: they outlive its callbacks
  InMemoryStore s;
  s.WatchAll({"never"}, Deadline::After(std::chrono::hours(1)), late.Callback());
  for (int round = 0; round < 3; ++round) {
    WatchResult& early = rounds[round];
    auto t0 = Clock::now();
    s.WatchAll({"never"}, Deadline::AfterMs(20), early.Callback());
    ASSERT_TRUE(early.Ready(std::chrono::seconds(3))) << "round " << round << " did not time out";
    EXPECT_EQ(early.future.get().code(), StatusCode::kDeadlineExceeded);
    EXPECT_GE(MsSince(t0), 15);
  }
  EXPECT_FALSE(late.Ready(std::chrono::milliseconds(0)));
  s.Shutdown();
  ASSERT_TRUE(late.Ready(std::chrono::seconds(5)));
  EXPECT_EQ(late.future.get().code(), StatusCode::kCancelled);
}

TEST(InMemoryStoreTest, WatchAllCancel) {
  WatchResult w;
  InMemoryStore s;
  uint64_t id = s.WatchAll({"a"}, Soon(), w.Callback());
  s.CancelWatch(id);
  ASSERT_TRUE(w.Ready(std::chrono::milliseconds(0)));  // synchronously on the canceller
  EXPECT_EQ(w.future.get().code(), StatusCode::kCancelled);
  s.CancelWatch(id);                          // no-op: already finished
  s.CancelWatch(12345);                       // no-op: unknown
  ASSERT_TRUE(s.Set("a", "1", Soon()).ok());  // must not call the callback again
  EXPECT_EQ(s.pending_watches(), 0u);
}

TEST(InMemoryStoreTest, ShutdownCancelsWatchesAndLaterWaits) {
  InMemoryStore s;
  std::vector<std::unique_ptr<WatchResult>> ws;
  for (int i = 0; i < 10; ++i) {
    ws.push_back(std::make_unique<WatchResult>());
    s.WatchAll({"k" + std::to_string(i)}, Deadline::Infinite(), ws.back()->Callback());
  }
  std::promise<Status> blocked;
  std::thread waiter([&] { blocked.set_value(s.Wait({"never"}, Deadline::Infinite())); });
  s.Shutdown();
  for (auto& w : ws) {
    ASSERT_TRUE(w->Ready(std::chrono::seconds(5)));
    EXPECT_EQ(w->future.get().code(), StatusCode::kCancelled);
  }
  auto f = blocked.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get().code(), StatusCode::kCancelled);
  waiter.join();
  WatchResult after;
  s.WatchAll({"x"}, Soon(), after.Callback());
  ASSERT_TRUE(after.Ready(std::chrono::milliseconds(0)));
  EXPECT_EQ(after.future.get().code(), StatusCode::kCancelled);
}

TEST(InMemoryStoreTest, DestructionCancelsWatches) {
  WatchResult w;
  {
    InMemoryStore s;
    s.WatchAll({"a"}, Deadline::Infinite(), w.Callback());
  }
  ASSERT_TRUE(w.Ready(std::chrono::milliseconds(0)));
  EXPECT_EQ(w.future.get().code(), StatusCode::kCancelled);
}

TEST(InMemoryStoreTest, CallbackMayReenterStore) {
  WatchResult w;
  InMemoryStore s;
  s.WatchAll({"a"}, Soon(), [&](Status st) {
    ASSERT_TRUE(st.ok());
    // Runs without the store lock: calling back in must not deadlock.
    ASSERT_TRUE(s.Set("b", *s.Get("a", Soon()), Soon()).ok());
    w.promise.set_value(st);
  });
  ASSERT_TRUE(s.Set("a", "1", Soon()).ok());
  ASSERT_TRUE(w.Ready(std::chrono::seconds(5)));
  EXPECT_EQ(*s.Get("b", Soon()), "1");
}

TEST(InMemoryStoreTest, ConcurrentAddIsAtomic) {
  InMemoryStore s;
  constexpr int kThreads = 8, kAdds = 1000;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) {
        if (!s.Add("counter", 1, Soon()).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*s.Get("counter", Soon()), std::to_string(kThreads * kAdds));
}

// ---------------------------------------------------------------------------------------------
// PrefixStore

TEST(PrefixStoreTest, Isolation) {
  auto base = std::make_shared<InMemoryStore>();
  PrefixStore a(base, "a"), b(base, "b");
  EXPECT_EQ(a.prefix(), "a");
  ASSERT_TRUE(a.Set("k", "from-a", Soon()).ok());
  ASSERT_TRUE(b.Set("k", "from-b", Soon()).ok());
  EXPECT_EQ(*a.Get("k", Soon()), "from-a");
  EXPECT_EQ(*b.Get("k", Soon()), "from-b");
  EXPECT_EQ(*base->Get("a/k", Soon()), "from-a");
  EXPECT_EQ(*a.Add("n", 2, Soon()), 2);
  EXPECT_EQ(*b.Add("n", 5, Soon()), 5);
  EXPECT_EQ(*a.CompareSet("k", "from-a", "a2", Soon()), "a2");
  EXPECT_EQ(*b.Get("k", Soon()), "from-b");

  auto la = a.List("", Soon());
  ASSERT_TRUE(la.ok());
  ASSERT_EQ(la->size(), 2u);
  EXPECT_EQ((*la)[0].first, "k");  // prefix stripped
  EXPECT_EQ((*la)[1].first, "n");

  EXPECT_EQ(*a.DeletePrefix("", Soon()), 2);
  EXPECT_EQ(b.List("", Soon())->size(), 2u);
  EXPECT_FALSE(*a.Delete("k", Soon()));
  EXPECT_TRUE(*b.Delete("k", Soon()));
  EXPECT_EQ(a.Get("n", Soon()).status().code(), StatusCode::kNotFound);

  // Wait is scoped too: b's key does not satisfy a's wait.
  ASSERT_TRUE(b.Set("ready", "1", Soon()).ok());
  EXPECT_EQ(a.Wait({"ready"}, Deadline::AfterMs(30)).code(), StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(a.Set("ready", "1", Soon()).ok());
  EXPECT_TRUE(a.Wait({"ready"}, Soon()).ok());

  // Nested prefixes compose.
  auto outer = std::make_shared<PrefixStore>(base, "w");
  PrefixStore inner(outer, "g0");
  ASSERT_TRUE(inner.Set("x", "1", Soon()).ok());
  EXPECT_EQ(*base->Get("w/g0/x", Soon()), "1");
}

}  // namespace
}  // namespace archi
