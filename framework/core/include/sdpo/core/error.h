#pragma once
// Framework error types. Every error a user can cause names the thing that is wrong (file,
// JSON path, plugin path, component) and what was expected. They derive from std::runtime_error
// and live in the framework library (default visibility), so a throw inside a plugin is caught
// by the host (aesthetics.md, "Errors at the boundary").

#include <exception>
#include <stdexcept>
#include <string>

#include "sdpo/core/api.h"

namespace sdpo {

/// The message of `e` for a user, on one line where libtorch's is: a c10::Error without its C++
/// backtrace (kept when the environment sets SDPO_DEBUG=1), std::bad_alloc as "out of memory"
/// with what to lower. Every catch that re-words or prints an exception uses it.
SDPO_API std::string error_message(const std::exception& e);

/// Base of every framework error.
class SDPO_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A manifest or option value is missing, unknown, of the wrong type or out of range.
/// Message: "<file>: <json.path>: <what was expected>".
class SDPO_API ManifestError : public Error {
 public:
  ManifestError(std::string file, std::string json_path, const std::string& message);
  const std::string& file() const { return file_; }
  const std::string& json_path() const { return json_path_; }

 private:
  std::string file_;
  std::string json_path_;
};

/// A plugin library could not be loaded, was built against another ABI/libtorch, or registers
/// a (kind, name) that another library already registered.
class SDPO_API PluginLoadError : public Error {
 public:
  PluginLoadError(std::string path, const std::string& message);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// A file (checkpoint, safetensors, HDF5, image) is missing, truncated or malformed.
class SDPO_API FileError : public Error {
 public:
  FileError(std::string path, const std::string& message);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// A multi-process run (sdpo/distributed/distributed.h) cannot go on: the rendezvous or a collective failed
/// or timed out, typically because another rank died or hung.
/// Message: "rank <r> of <n>: <op>: <what happened, naming the ranks that stopped when known>".
class SDPO_API DistributedError : public Error {
 public:
  DistributedError(int rank, int world_size, std::string op, const std::string& message);
  int rank() const { return rank_; }
  const std::string& op() const { return op_; }

 private:
  int rank_;
  std::string op_;
};

/// A NaN or Inf appeared where the run cannot continue (reward, loss, gradient).
class SDPO_API NumericError : public Error {
 public:
  using Error::Error;
};

}  // namespace sdpo
