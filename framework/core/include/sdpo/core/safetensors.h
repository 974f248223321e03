#pragma once
// safetensors files (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then
// the raw little-endian data. Every offset and length is checked against the file size and the
// tensors must tile the data section exactly (no overlap, no hole, no tail), so a truncated or
// malicious file is refused with a FileError naming the file and the tensor. The file is
// memory-mapped and each tensor copied out once.

#include <map>
#include <string>

#include "sdpo/core/tensor_map.h"

namespace sdpo {

using StringMap = std::map<std::string, std::string>;

/// Reads every tensor (CPU, contiguous, in the file's dtype). Supported dtypes: F64, F32, F16,
/// BF16, I64, I32, I16, I8, U8, BOOL. `metadata` (optional) receives "__metadata__".
TensorMap safetensors_load(const std::string& path, StringMap* metadata = nullptr);

/// Writes tensors (moved to CPU, made contiguous) with string metadata; "format": "pt" is added
/// unless `metadata` sets "format". Writes to
/// `path.tmp` and renames, so a crash never leaves a half-written file under `path`.
void safetensors_save(const std::string& path, const TensorMap& tensors, const StringMap& metadata = {});

}  // namespace sdpo
