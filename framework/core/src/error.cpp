#include "sdpo/core/error.h"

namespace sdpo {

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
