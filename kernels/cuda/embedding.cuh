// Embedding lookup on CUDA. Host launcher only; kernel in embedding.cu.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

// out[n, :] = table[ids[n], :] for n < count; ids are i32 (ids_i64 false) or i64, table
// [vocab, hidden] and out [count, hidden] of `dtype`. An id outside [0, vocab) makes its output
// row zero and the call return kOutOfRange naming the first such position found: the launcher
// therefore waits for `stream` (one small device-to-host copy) before returning.
LaunchResult InvokeEmbedding(cudaDataType_t dtype, const void* ids, bool ids_i64, const void* table,
                             void* out, int64_t count, int64_t vocab, int64_t hidden,
                             cudaStream_t stream);

}  // namespace archi::kernels::cuda
