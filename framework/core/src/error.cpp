#include "sdpo/core/error.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace sdpo {

std::string error_message(const std::exception& e) {
  const char* debug = std::getenv("SDPO_DEBUG");
  const bool full = debug != nullptr && std::strcmp(debug, "1") == 0;
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) {
    std::string m = full ? ce->what() : ce->what_without_backtrace();
    // libtorch's allocators say "not enough memory" (CPU) or "out of memory" (CUDA).
    if (m.find("not enough memory") != std::string::npos || m.find("out of memory") != std::string::npos) {
      m = "out of memory: " + m + " (lower train.batch_size, train.train_batch_size or sample.forward_batch)";
    }
    return m;
  }
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    return std::string("out of memory (") + e.what() +
           "): lower train.batch_size, train.train_batch_size or sample.forward_batch";
  }
  return e.what();
}

ManifestError::ManifestError(std::string file, std::string json_path, const std::string& message)
    : Error(file + ": " + (json_path.empty() ? std::string("(root)") : json_path) + ": " + message),
      file_(std::move(file)),
      json_path_(std::move(json_path)) {}

PluginLoadError::PluginLoadError(std::string path, const std::string& message)
    : Error("plugin " + path + ": " + message), path_(std::move(path)) {}

FileError::FileError(std::string path, const std::string& message)
    : Error(path + ": " + message), path_(std::move(path)) {}

DistributedError::DistributedError(int rank, int world_size, std::string op, const std::string& message)
    : Error("rank " + std::to_string(rank) + " of " + std::to_string(world_size) + ": " + op + ": " + message),
      rank_(rank),
      op_(std::move(op)) {}

}  // namespace sdpo
