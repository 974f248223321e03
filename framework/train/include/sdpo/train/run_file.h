#pragma once
// The HDF5 run file, schema version 1 (DESIGN.md section 6). Every HDF5 call is wrapped once in
// run_file.cpp; nothing else in the codebase sees an hid_t.
//
//   /                      attrs: schema_version, manifest, framework_version, git_commit,
//                                 torch_version, device, intra_op_threads, started_at
//   /curves/train/<m>      1-D extendible float64, one row per epoch
//   /curves/eval/steps_<n>/<m>
//   /trajectories/epoch_<k>/<array>   chunked, gzip
//
// Example:
//   auto f = RunFile::create("runs/q/run.h5", {{"manifest", text}, ...});
//   f.append_row("train", {{"epoch", 0}, {"samples", 64}, {"loss", 0.3}});
//   f.flush();
//
// Thread safety: not thread-safe.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sdpo {

inline constexpr std::int64_t kRunFileSchemaVersion = 1;

/// A small table in an HDF5 file of its own (e.g. `sdpo analyze dense-rewards`): root attributes
/// and one 1-D dataset per column, every column as long as the others. Not a run file (no
/// schema_version, no curves).
struct TableFile {
  std::map<std::string, std::string> string_attributes;
  std::map<std::string, std::int64_t> integer_attributes;
  std::map<std::string, std::vector<std::string>> string_columns;    ///< variable-length UTF-8
  std::map<std::string, std::vector<double>> number_columns;         ///< float64
  std::map<std::string, std::vector<std::int64_t>> integer_columns;  ///< int64
};

class RunFile {
 public:
  /// Creates (truncating) `path`, its parent folders, and writes the root attributes (strings)
  /// plus schema_version (int64).
  static RunFile create(const std::string& path, const std::map<std::string, std::string>& attributes);
  /// Opens an existing run file for appending (resume), or only for reading when `writable` is
  /// false (`sdpo experiment` inspecting run folders).
  static RunFile open(const std::string& path, bool writable = true);

  RunFile(RunFile&&) noexcept;
  RunFile& operator=(RunFile&&) noexcept;
  ~RunFile();  // flushes and closes

  /// Appends one row to /curves/<group>/ (group: "train" or "eval/steps_<n>"). A metric seen
  /// for the first time gets a dataset whose earlier rows are NaN; a known metric missing from
  /// `row` gets NaN, so every dataset in a group has the same length.
  void append_row(const std::string& group, const std::map<std::string, double>& row);
  /// Number of rows in /curves/<group> (0 if absent).
  std::int64_t rows(const std::string& group) const;
  /// Keeps the first `rows` rows of every dataset in /curves/<group> (resume after a crash).
  void truncate_rows(const std::string& group, std::int64_t rows);
  /// Every group under /curves that holds curves, as append_row names it ("train",
  /// "eval/steps_4"), sorted.
  std::vector<std::string> curve_groups() const;
  /// Names of the curves in /curves/<group>, sorted (empty if the group is absent).
  std::vector<std::string> metrics(const std::string& group) const;
  /// Deletes /trajectories/epoch_<k> for every k > `epoch` (resume: epochs to be re-run).
  void remove_trajectories_after(std::int64_t epoch);

  /// Writes /trajectories/epoch_<epoch>/<name> for each array (float or int64 tensors of any
  /// rank; chunked, gzip level 4) and a variable-length string dataset "prompts".
  void write_trajectories(
      std::int64_t epoch, const std::map<std::string, at::Tensor>& arrays, const std::vector<std::string>& prompts);

  /// Reads a whole 1-D curve (for tests and resume).
  std::vector<double> read_curve(const std::string& group, const std::string& metric) const;
  /// Reads a root string attribute.
  std::string attribute(const std::string& name) const;
  /// Writes (or replaces) a root string attribute; "schema_version" is reserved.
  void set_attribute(const std::string& name, const std::string& value);

  void flush();
  const std::string& path() const { return path_; }

  /// Writes `table` to `path` (truncating; parent folders created). Column names must be valid
  /// HDF5 link names, unique across the three column maps, and the columns of equal length.
  static void write_table(const std::string& path, const TableFile& table);
  /// Reads a file written by write_table (attributes by class: integer or string; datasets by
  /// class: string, float or integer). Throws FileError on anything else.
  static TableFile read_table(const std::string& path);

 private:
  RunFile();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace sdpo
