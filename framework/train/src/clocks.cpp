#include "sdpo/train/clocks.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <ctime>

namespace sdpo {

std::string utc_timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&t, &utc);  // the reentrant form: gmtime's static buffer is shared between threads
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void synchronize_device(c10::Device device) {
  if (device.is_cpu()) return;
  const auto* impl = c10::impl::getDeviceGuardImpl(device.type());
  impl->getStream(device.has_index() ? device : c10::Device(device.type(), impl->getDevice().index())).synchronize();
}

DeviceClock::DeviceClock(c10::Device device, double start_seconds) : device_(device), start_seconds_(start_seconds) {
  if (device_.is_cpu()) {
    cpu_origin_ = process_cpu_seconds();
  } else {
    synchronize_device(device_);
    wall_origin_ = std::chrono::steady_clock::now();
  }
}

double DeviceClock::seconds() const {
  if (device_.is_cpu()) return start_seconds_ + (process_cpu_seconds() - cpu_origin_);
  synchronize_device(device_);
  return start_seconds_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_origin_).count();
}

}  // namespace sdpo
