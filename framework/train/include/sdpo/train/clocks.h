#pragma once
// The clocks runs are logged against (DESIGN.md section 8, issue 8): `device_seconds` is what
// GPU-hour curves are plotted against.
//   - On the CPU: the CPU time of the whole process (all threads), clock_gettime with
//     CLOCK_PROCESS_CPUTIME_ID, so 2 busy threads count 2 seconds per wall second.
//   - On a CUDA device: the wall time of the run, read after a synchronize of the device's
//     current stream, so queued kernels are counted when they finish.
//
// Why not CUDA events (checked for issue 8): the elapsed time between two events recorded on a
// stream is stream time, idle gaps included, so for this cumulative clock (read at epoch ends,
// after a synchronize) it would equal the synchronized wall time to within the synchronize's
// latency (microseconds against seconds); GPU busy time would need CUPTI, not events. Nor could
// it be built and tested against the CPU libtorch 1.13 of the development machines: c10::Event
// and DeviceGuardImplInterface have no elapsed-time call in 1.13 (a later libtorch adds one),
// and ATen/cuda/CUDAEvent.h includes c10/cuda headers that Debian's CPU libtorch does not ship.
// The synchronized wall clock is used on every build.
//
// Example:
//   sdpo::DeviceClock clock(c10::Device("cpu"), /*start_seconds=*/0);
//   ... work ...
//   double s = clock.seconds();   // 0 + process CPU seconds since construction
//
// Thread safety: seconds() may be called from any thread.

#include <c10/core/Device.h>

#include <chrono>
#include <string>

#include "sdpo/core/api.h"

namespace sdpo {

/// The wall-clock time now in UTC, ISO 8601 to the second ("2026-12-03T17:41:25Z"): the
/// timestamps of run files and experiment indexes.
SDPO_API std::string utc_timestamp();

/// CPU time of the whole process (all threads) in seconds, CLOCK_PROCESS_CPUTIME_ID.
SDPO_API double process_cpu_seconds();

/// Waits until the device has finished the work queued on its current stream (CUDA); returns at
/// once on the CPU.
SDPO_API void synchronize_device(c10::Device device);

class SDPO_API DeviceClock {
 public:
  /// Starts at `start_seconds` (a resumed run continues its logged device_seconds).
  explicit DeviceClock(c10::Device device, double start_seconds = 0);
  /// start_seconds + the device time since construction (see the file comment).
  double seconds() const;
  c10::Device device() const { return device_; }

 private:
  c10::Device device_;
  double start_seconds_;
  double cpu_origin_ = 0;
  std::chrono::steady_clock::time_point wall_origin_;
};

}  // namespace sdpo
