#pragma once
// Multi-process data parallelism through libtorch's c10d (DESIGN.md section 9): a thin wrapper
// over one process group (ProcessGroupGloo on the CPU; ProcessGroupNCCL on CUDA where the
// libtorch was built with it) with rendezvous through a TCPStore, configured by the launcher
// environment that torchrun and Slurm's srun set:
//
//   RANK, WORLD_SIZE        this process's rank and the number of processes (required together)
//   LOCAL_RANK              rank on this machine (picks cuda:<LOCAL_RANK>; default RANK)
//   MASTER_ADDR, MASTER_PORT where rank 0 serves the TCPStore (default 127.0.0.1:29500)
//   SDPO_DIST_TIMEOUT       seconds any rendezvous or collective may wait (default 300)
//   SDPO_DIST_BACKEND       gloo | nccl (default: nccl for a CUDA device when built in, else gloo)
//   GLOO_SOCKET_IFNAME      network interface for Gloo (default: loopback when MASTER_ADDR is a
//                           loopback address, else the interface of this host's name)
//
// Contract: every rank calls the same collectives in the same order with tensors of the same
// dtype and trailing shape (first dims may differ where stated). A collective that a peer never
// joins (it died, hung or diverged) fails after the timeout at the latest with a
// DistributedError naming this rank, the operation and, when it can tell, the rank that
// stopped: every rank beats a heartbeat counter in the store, and a failed collective reports the
// ranks whose counter stands still. Nothing waits forever.
//
// Example (what the trainer does):
//   auto dist = sdpo::Distributed::from_env(device);  // nullptr without WORLD_SIZE > 1
//   if (dist) {
//     auto parts = dist->all_gather(rewards, "rewards");           // world_size tensors (n_r, T)
//     optimizer.set_gradient_hook([&](const std::vector<at::Tensor>& p) {
//       dist->all_reduce_gradients(p);                              // mean of the ranks' gradients
//     });
//   }
//
// Thread safety: not thread-safe; one thread issues the collectives (the heartbeat thread uses its
// own store connection).

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sdpo/core/api.h"

namespace sdpo {

struct DistributedOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::milliseconds timeout{300000};
  std::string backend;            ///< "gloo" or "nccl"; empty: nccl on a CUDA device when built in, else gloo
  c10::Device device{c10::kCPU};  ///< the training device (NCCL needs cuda:<local_rank>)

  /// Reads the environment above. Returns world_size 1 when WORLD_SIZE is unset; throws a
  /// DistributedError for malformed or inconsistent values.
  static DistributedOptions from_env(c10::Device device);
};

/// The seed of rank `rank`'s random stream: `seed` itself for rank 0 (so a one-process run is
/// today's run), then `seed` + rank x 0x9E3779B97F4A7C15 (mod 2^64; a stride no manifest's seed
/// grid comes near).
SDPO_API std::uint64_t rank_seed(std::int64_t seed, int rank);

class SDPO_API Distributed {
 public:
  /// The process group of this process when WORLD_SIZE > 1, else nullptr (one process: no group,
  /// no store, nothing changes). Created once per process and shared: a second call (another run
  /// of `sdpo experiment`) returns the same group.
  static std::shared_ptr<Distributed> from_env(c10::Device device);

  /// Rendezvous: rank 0 serves the TCPStore, every rank checks in, rank 0 waits for all of them
  /// (naming those missing after the timeout), then the process group connects.
  explicit Distributed(const DistributedOptions& options);
  ~Distributed();
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const;
  int world_size() const;
  int local_rank() const;
  bool is_main() const { return rank() == 0; }
  const std::string& backend() const;

  /// Every rank's `t`, in rank order. `t` may differ in its first dim between ranks (the others
  /// must agree); the results are on t's device. `what` names the data in errors.
  std::vector<at::Tensor> all_gather(const at::Tensor& t, const std::string& what);
  /// Sum over ranks, in place. `t` has the same shape on every rank.
  void all_reduce_sum(at::Tensor& t, const std::string& what);
  /// Replaces every defined-or-not gradient of `params` by the mean over ranks: gradients are
  /// flattened into buckets of at most `bucket_bytes` (one dtype and device each), each bucket
  /// all-reduced, then divided by world_size. A parameter without a gradient counts as zeros (and
  /// gets a zero gradient) so that every rank reduces the same layout.
  void all_reduce_gradients(const std::vector<at::Tensor>& params, std::int64_t bucket_bytes = 25 << 20);
  /// Rank `root`'s `t` on every rank, in place (same shape everywhere).
  void broadcast(at::Tensor& t, int root, const std::string& what);
  void barrier(const std::string& what);

  /// Best effort, never throws: leaves `message` in the store so that peers whose next collective
  /// fails can say why this rank stopped. Called by the trainer before it rethrows an error.
  void report_failure(const std::string& message) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sdpo
