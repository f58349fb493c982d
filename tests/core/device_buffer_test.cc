// DeviceBuffer on the CPU (always) and on CUDA (skips cleanly without a GPU or driver).
#include <gtest/gtest.h>

#include <vector>

#include "runtime/core/device_buffer.h"

namespace archi {
namespace {

TEST(DeviceBufferTest, HostRoundTripAndFill) {
  auto b = DeviceBuffer::Allocate(1000, Device::Cpu());
  ASSERT_TRUE(b.ok()) << b.status();
  std::vector<uint8_t> src(1000), dst(1000, 0);
  for (int i = 0; i < 1000; ++i) src[i] = static_cast<uint8_t>(i * 13);
  ASSERT_TRUE(b->CopyFromHost(src.data(), src.size()).ok());
  ASSERT_TRUE(b->CopyToHost(dst.data(), dst.size()).ok());
  EXPECT_EQ(src, dst);
  ASSERT_TRUE(b->Fill(0xAB).ok());
  ASSERT_TRUE(b->CopyToHost(dst.data(), dst.size()).ok());
  EXPECT_EQ(dst, std::vector<uint8_t>(1000, 0xAB));
  EXPECT_EQ(b->CopyFromHost(src.data(), 1001).code(), StatusCode::kInvalidArgument);
  DeviceBuffer moved = std::move(*b);
  EXPECT_EQ(moved.size(), 1000u);
  EXPECT_EQ(b->data(), nullptr);
}

TEST(DeviceBufferTest, CudaWithoutGpuIsAClearError) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present; covered by CudaRoundTrip";
  auto b = DeviceBuffer::Allocate(16, Device::Cuda(0));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable) << b.status();
  EXPECT_FALSE(b.status().message().empty());
}

TEST(DeviceBufferTest, CudaRoundTrip) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device or driver on this machine";
  auto b = DeviceBuffer::Allocate(1 << 20, Device::Cuda(0));
  if (!b.ok()) GTEST_SKIP() << "CUDA unusable here: " << b.status();
  std::vector<uint8_t> src(1 << 20), dst(1 << 20, 0);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE(b->CopyFromHost(src.data(), src.size()).ok());
  ASSERT_TRUE(b->CopyToHost(dst.data(), dst.size()).ok());
  EXPECT_EQ(src, dst);
  ASSERT_TRUE(b->Fill(0x5A).ok());
  ASSERT_TRUE(b->CopyToHost(dst.data(), dst.size()).ok());
  EXPECT_EQ(dst, std::vector<uint8_t>(1 << 20, 0x5A));
}

}  // namespace
}  // namespace archi
