// Private to runtime/model (and its tests/fuzzer): the header-vs-config checks of Model::Load,
// split out so that they run on an in-memory header without a file or spdlog.
#pragma once

#include <string_view>

#include "runtime/core/status.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"

namespace archi::model {

// Checks a parsed safetensors header against `config` for a stage holding `range` (resolved,
// see ResolveLayerRange): every tensor must belong to the model's full set (kInvalidArgument
// "unexpected tensor"; "__metadata__" is not a tensor), every tensor present must have
// config.dtype and the expected shape (kInvalidArgument), and every tensor of `range` must be
// present (kNotFound). Messages start with `source`.
Status CheckTensorsAgainstConfig(const SafetensorsHeader& header, const ModelConfig& config,
                                 LayerRange range, std::string_view source);

}  // namespace archi::model
