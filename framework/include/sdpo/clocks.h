#pragma once
// The clocks runs are logged against (DESIGN.md section 8, issue 8): `device_seconds` is what
// GPU-hour curves are plotted against.
//   - On the CPU: the CPU time of the whole process (all threads), clock_gettime with
//     CLOCK_PROCESS_CPUTIME_ID, so 2 busy threads count 2 seconds per wall second.
//   - On a CUDA device: the wall time of the run, read after a synchronize of the device's
//     current stream, so queued kernels are counted when they finish. (Timing with CUDA events
//     needs ATen's CUDA library at build time; a CPU libtorch ships the same headers, so nothing
//     at compile time tells the two apart, and the synchronized wall clock is used on every build.)
//
// Example:
//   sdpo::DeviceClock clock(c10::Device("cpu"), /*start_seconds=*/0);
//   ... work ...
//   double s = clock.seconds();   // 0 + process CPU seconds since construction
//
// Thread safety: seconds() may be called from any thread.

#include <c10/core/Device.h>
#include <chrono>

#include "sdpo/api.h"

namespace sdpo {

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
