// The c10d wrapper of sdpo/distributed/distributed.h: TCPStore rendezvous, ProcessGroupGloo (or NCCL), the
// few collectives the trainer needs, and error messages that name the rank that stopped.
#include "sdpo/distributed/distributed.h"

#include <ATen/ATen.h>
#include <torch/csrc/api/include/torch/version.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SDPO_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "sdpo/core/error.h"

#ifndef USE_C10D_GLOO
#error "distributed.cpp needs USE_C10D_GLOO (framework/CMakeLists.txt defines it when libgloo-dev is installed)"
#endif

namespace sdpo {

namespace {

// c10d's collectives live on ProcessGroup in libtorch 1.x and on its Backend in 2.x.
#if TORCH_VERSION_MAJOR >= 2
using Group = c10d::Backend;
#else
using Group = c10d::ProcessGroup;
#endif

constexpr auto kHeartbeatPeriod = std::chrono::milliseconds(500);
const char* kJoinedKey = "sdpo/joined/";
const char* kHeartbeatKey = "sdpo/heartbeat/";
const char* kFailedKey = "sdpo/failed/";

int env_int(const char* name, int fallback, int world_size_for_errors) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  try {
    std::size_t used = 0;
    const int x = std::stoi(v, &used);
    if (used != std::string(v).size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw DistributedError(
        0, world_size_for_errors, "environment", std::string(name) + " must be an integer, got '" + v + "'");
  }
}

std::string env_str(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == '\0' ? fallback : std::string(v);
}

bool is_loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1"; }

std::string seconds_text(std::chrono::milliseconds ms) {
  std::string s = std::to_string(static_cast<double>(ms.count()) / 1000.0);
  s.erase(s.find_last_not_of('0') + 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s + " s";
}

// An exception's message without c10's C++ backtrace (what() of a c10::Error carries one).
std::string cause_of(const std::exception& e) { return error_message(e); }

// libtorch 2.4 and later serve the TCPStore through libuv by default, but a libtorch built
// without libuv (Debian 13's 2.6) refuses that default instead of falling back. The classic
// socket server is in every build, and the store carries only the rendezvous and heartbeats here
// (a few keys per rank per second), where libuv's scaling to thousands of ranks buys nothing.
// Detected by the member, since TCPStoreOptions has no useLibUV before 2.2.
template <class Options>
auto use_classic_store_server(Options& so, int) -> decltype(so.useLibUV = false, void()) {
  so.useLibUV = false;
}
template <class Options>
void use_classic_store_server(Options&, long) {}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    s += (i == 0 ? "" : i + 1 == ranks.size() ? " and " : ", ") + std::to_string(ranks[i]);
  }
  return (ranks.size() == 1 ? "rank " : "ranks ") + s;
}

}  // namespace

std::uint64_t rank_seed(std::int64_t seed, int rank) {
  return static_cast<std::uint64_t>(seed) + static_cast<std::uint64_t>(rank) * 0x9E3779B97F4A7C15ULL;
}

DistributedOptions DistributedOptions::from_env(c10::Device device) {
  DistributedOptions o;
  o.device = device;
  o.world_size = env_int("WORLD_SIZE", 1, 1);
  const int n = o.world_size;
  if (n < 1) throw DistributedError(0, n, "environment", "WORLD_SIZE must be at least 1");
  if (n == 1) return o;
  if (std::getenv("RANK") == nullptr) {
    throw DistributedError(0, n, "environment", "WORLD_SIZE is " + std::to_string(n) + " but RANK is not set");
  }
  o.rank = env_int("RANK", 0, n);
  if (o.rank < 0 || o.rank >= n) {
    throw DistributedError(o.rank, n, "environment", "RANK must be in [0, WORLD_SIZE)");
  }
  o.local_rank = env_int("LOCAL_RANK", o.rank, n);
  o.master_addr = env_str("MASTER_ADDR", "127.0.0.1");
  o.master_port = env_int("MASTER_PORT", 29500, n);
  if (o.master_port <= 0 || o.master_port > 65535) {
    throw DistributedError(
        o.rank, n, "environment", "MASTER_PORT must be a TCP port, got " + std::to_string(o.master_port));
  }
  const char* t = std::getenv("SDPO_DIST_TIMEOUT");
  if (t != nullptr && *t != '\0') {
    double s = 0;
    try {
      s = std::stod(t);
    } catch (const std::exception&) {
      s = -1;
    }
    if (!(s > 0))
      throw DistributedError(
          o.rank, n, "environment", std::string("SDPO_DIST_TIMEOUT must be seconds > 0, got '") + t + "'");
    o.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000));
  }
  o.backend = env_str("SDPO_DIST_BACKEND", "");
  return o;
}

struct Distributed::Impl {
  DistributedOptions o;
  c10::intrusive_ptr<c10d::Store> store;  // the main thread's connection
  c10::intrusive_ptr<Group> group;
  c10::Device comm_device{c10::kCPU};  // where the backend wants its tensors
  // The heartbeat: its own store connection (a TCPStore client is one socket, not thread-safe).
  c10::intrusive_ptr<c10d::Store> beat_store;
  std::thread beat_thread;
  std::mutex beat_mutex;
  std::condition_variable beat_cv;
  bool beat_stop = false;

  [[noreturn]] void fail(const std::string& op, const std::string& message) {
    throw DistributedError(o.rank, o.world_size, op, message);
  }

  c10::intrusive_ptr<c10d::TCPStore> connect_store(bool server) {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.master_port);
    so.isServer = server;
    so.numWorkers = static_cast<std::size_t>(o.world_size);
    so.waitWorkers = false;  // rendezvous() waits itself, so that it can name who is missing
    so.timeout = o.timeout;
    use_classic_store_server(so, 0);
    try {
      return c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    } catch (const std::exception& e) {
      const std::string where = o.master_addr + ":" + std::to_string(o.master_port);
      fail(
          "rendezvous",
          server ? "cannot serve the TCPStore on " + where + " (port in use? set MASTER_PORT): " + cause_of(e)
                 : "cannot reach the TCPStore that rank 0 serves on " + where + " within " + seconds_text(o.timeout) +
                       " (is rank 0 running? MASTER_ADDR/MASTER_PORT): " + cause_of(e));
    }
  }

  // Every rank checks in and waits for all the others, so that a rank that never starts is named
  // here rather than surfacing as an anonymous Gloo connect timeout.
  void rendezvous() {
    store->set(kJoinedKey + std::to_string(o.rank), std::vector<std::uint8_t>{1});
    const auto deadline = std::chrono::steady_clock::now() + o.timeout;
    for (;;) {
      std::vector<int> missing;
      for (int r = 0; r < o.world_size; ++r) {
        if (!store->check({kJoinedKey + std::to_string(r)})) missing.push_back(r);
      }
      if (missing.empty()) return;
      if (std::chrono::steady_clock::now() > deadline) {
        fail(
            "rendezvous", rank_list(missing) + " did not join within " + seconds_text(o.timeout) + " (TCPStore " +
                              o.master_addr + ":" + std::to_string(o.master_port) + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  void start_heartbeat() {
    beat_store = connect_store(false);
    beat_thread = std::thread([this] {
      const std::string key = kHeartbeatKey + std::to_string(o.rank);
      std::unique_lock<std::mutex> lock(beat_mutex);
      while (!beat_stop) {
        try {
          beat_store->add(key, 1);
        } catch (const std::exception&) {
          return;  // the store (rank 0) is gone; the next collective reports it
        }
        beat_cv.wait_for(lock, kHeartbeatPeriod, [this] { return beat_stop; });
      }
    });
  }

  void stop_heartbeat() {
    {
      std::lock_guard<std::mutex> lock(beat_mutex);
      beat_stop = true;
    }
    beat_cv.notify_all();
    if (beat_thread.joinable()) beat_thread.join();
  }

  // After a failed collective: which ranks stopped? A rank that reported an error says so in the
  // store; a rank that crashed or was killed stops beating. Reading every counter twice, three
  // heartbeat periods apart, tells the two apart from the living without any extra protocol.
  std::string diagnose() {
    try {
      std::vector<std::string> reported;
      for (int r = 0; r < o.world_size; ++r) {
        const std::string key = kFailedKey + std::to_string(r);
        if (r != o.rank && store->check({key})) {
          const auto v = store->get(key);
          reported.push_back("rank " + std::to_string(r) + " failed: " + std::string(v.begin(), v.end()));
        }
      }
      if (!reported.empty()) {
        std::string s;
        for (const auto& x : reported) s += (s.empty() ? "" : "; ") + x;
        return s;
      }
      std::vector<std::int64_t> before;
      for (int r = 0; r < o.world_size; ++r) before.push_back(store->add(kHeartbeatKey + std::to_string(r), 0));
      std::this_thread::sleep_for(3 * kHeartbeatPeriod);
      std::vector<int> stopped;
      for (int r = 0; r < o.world_size; ++r) {
        if (r != o.rank && store->add(kHeartbeatKey + std::to_string(r), 0) == before[static_cast<std::size_t>(r)]) {
          stopped.push_back(r);
        }
      }
      if (!stopped.empty()) return rank_list(stopped) + " stopped (no heartbeat: exited, killed or suspended)";
      return "every rank is still alive: one may hang or have taken another path through the collectives";
    } catch (const std::exception&) {
      return "rank 0 stopped (the TCPStore it serves on " + o.master_addr + ":" + std::to_string(o.master_port) +
             " is unreachable)";
    }
  }

  // Runs one collective; any c10d/Gloo error (a peer's socket closed, the timeout) becomes a
  // DistributedError naming this rank, the operation and the ranks that stopped.
  template <class F>
  void run(const std::string& op, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      std::string cause = cause_of(e);
      const auto nl = cause.find('\n');
      if (nl != std::string::npos) cause = cause.substr(0, nl);
      fail(op, diagnose() + " (" + cause + "; timeout " + seconds_text(o.timeout) + ")");
    }
  }

  static void wait(const c10::intrusive_ptr<c10d::Work>& work) { work->wait(); }
};

std::shared_ptr<Distributed> Distributed::from_env(c10::Device device) {
  // One group per process, kept until exit: a second run in the same process (sdpo experiment)
  // must not race its peers to re-serve the store on the same port.
  static std::mutex mutex;
  static std::shared_ptr<Distributed> group;
  std::lock_guard<std::mutex> lock(mutex);
  if (group) return group;
  auto o = DistributedOptions::from_env(device);
  if (o.world_size == 1) return nullptr;
  group = std::make_shared<Distributed>(o);
  return group;
}

Distributed::Distributed(const DistributedOptions& options) : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.o = options;
  std::string backend = s.o.backend;
  if (backend.empty()) {
#ifdef SDPO_HAVE_NCCL
    backend = s.o.device.is_cuda() ? "nccl" : "gloo";
#else
    backend = "gloo";
#endif
  }
  s.o.backend = backend;
  if (backend != "gloo" && backend != "nccl")
    s.fail("environment", "SDPO_DIST_BACKEND must be gloo or nccl, got '" + backend + "'");
#ifndef SDPO_HAVE_NCCL
  if (backend == "nccl") {
    s.fail(
        "environment",
        "this build has no ProcessGroupNCCL (a CPU libtorch, or NCCL's headers were not found at "
        "configure time); use SDPO_DIST_BACKEND=gloo");
  }
#endif
  s.store = s.connect_store(s.o.rank == 0);
  s.rendezvous();
  // c10d's own keys go under a prefix, apart from the rendezvous and heartbeat keys above.
  auto pg_store = c10::make_intrusive<c10d::PrefixStore>("sdpo_pg", s.store);
  try {
    if (backend == "gloo") {
      auto go = c10d::ProcessGroupGloo::Options::create(s.o.timeout);
      // A loopback MASTER_ADDR means one machine: bind Gloo to loopback too, so that a host whose
      // name does not resolve (containers) still works. Otherwise Gloo's own choice, or the
      // interface the user names as in PyTorch.
      const std::string ifname = env_str("GLOO_SOCKET_IFNAME", "");
      if (!ifname.empty()) {
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(s.o.master_addr)) {
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      s.group = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, s.o.rank, s.o.world_size, go);
      s.comm_device = c10::Device(c10::kCPU);
    }
#ifdef SDPO_HAVE_NCCL
    if (backend == "nccl") {
      // Without blocking wait, Work::wait() only orders streams and a dead peer is noticed by the
      // watchdog; blocking wait makes wait() honor the timeout and throw here.
      setenv("NCCL_BLOCKING_WAIT", "1", 0);
      setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = s.o.timeout;
      s.comm_device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(s.o.local_rank));
      s.group = c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, s.o.rank, s.o.world_size, no);
    }
#endif
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    s.fail("connect " + backend, cause_of(e));
  }
  s.start_heartbeat();
  // Test hook (tests/integration/distributed_test.cpp): this rank dies like a crash, with no
  // cleanup and no report, once the group is up; its peers must stop with an error naming it.
  const char* exit_rank = std::getenv("SDPO_DIST_TEST_EXIT_RANK");
  if (exit_rank != nullptr && std::to_string(s.o.rank) == exit_rank) std::_Exit(3);
}

Distributed::~Distributed() {
  impl_->stop_heartbeat();
  impl_->group.reset();
  impl_->beat_store.reset();
  impl_->store.reset();
}

int Distributed::rank() const { return impl_->o.rank; }
int Distributed::world_size() const { return impl_->o.world_size; }
int Distributed::local_rank() const { return impl_->o.local_rank; }
const std::string& Distributed::backend() const { return impl_->o.backend; }

std::vector<at::Tensor> Distributed::all_gather(const at::Tensor& t, const std::string& what) {
  auto& s = *impl_;
  TORCH_CHECK(t.dim() >= 1, "Distributed::all_gather: '" + what + "' needs at least one dimension");
  const int n = s.o.world_size;
  const std::string op = "all_gather (" + what + ")";
  // Gloo has no bool; it moves bytes alike.
  const bool is_bool = t.scalar_type() == at::kBool;
  at::Tensor x = (is_bool ? t.to(at::kByte) : t).contiguous().to(s.comm_device);
  // Gloo's allgather wants equal shapes: gather the first dims, pad to the largest, trim after.
  std::vector<at::Tensor> sizes_in{at::full({1}, x.size(0), x.options().dtype(at::kLong))};
  std::vector<std::vector<at::Tensor>> sizes_out(1);
  for (int r = 0; r < n; ++r) sizes_out[0].push_back(at::empty_like(sizes_in[0]));
  s.run(op, [&] { Impl::wait(s.group->allgather(sizes_out, sizes_in)); });
  std::vector<std::int64_t> rows;
  std::int64_t most = 0;
  for (const auto& st : sizes_out[0]) {
    rows.push_back(st.cpu().item<std::int64_t>());
    most = std::max(most, rows.back());
  }
  if (x.size(0) < most) {
    auto pad_shape = x.sizes().vec();
    pad_shape[0] = most - x.size(0);
    x = at::cat({x, at::zeros(pad_shape, x.options())}, 0);
  }
  std::vector<at::Tensor> in{x};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < n; ++r) out[0].push_back(at::empty_like(x));
  s.run(op, [&] { Impl::wait(s.group->allgather(out, in)); });
  std::vector<at::Tensor> parts;
  for (int r = 0; r < n; ++r) {
    auto p = out[0][static_cast<std::size_t>(r)].slice(0, 0, rows[static_cast<std::size_t>(r)]).to(t.device());
    parts.push_back(is_bool ? p.to(at::kBool) : p);
  }
  return parts;
}

void Distributed::all_reduce_sum(at::Tensor& t, const std::string& what) {
  auto& s = *impl_;
  std::vector<at::Tensor> v{t.contiguous().to(s.comm_device)};
  s.run("all_reduce (" + what + ")", [&] { Impl::wait(s.group->allreduce(v)); });
  t.copy_(v[0]);
}

void Distributed::all_reduce_gradients(const std::vector<at::Tensor>& params, std::int64_t bucket_bytes) {
  auto& s = *impl_;
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (!p.grad().defined()) const_cast<at::Tensor&>(p).mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad());
  }
  // Buckets: consecutive gradients of one dtype and device, up to bucket_bytes each (one
  // gradient larger than that is a bucket of its own). Few large messages instead of one per
  // tensor is what DDP's reducer does; the layout is the parameter order, identical on all ranks.
  std::vector<std::vector<std::size_t>> buckets;
  std::int64_t bytes = 0;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const auto b = static_cast<std::int64_t>(grads[i].numel() * grads[i].element_size());
    const bool fits = !buckets.empty() && bytes + b <= bucket_bytes &&
                      grads[buckets.back().front()].scalar_type() == grads[i].scalar_type() &&
                      grads[buckets.back().front()].device() == grads[i].device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(i);
    bytes += b;
  }
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  s.run("all_reduce (gradients)", [&] {
    for (const auto& bucket : buckets) {
      std::vector<at::Tensor> views;
      for (auto i : bucket) views.push_back(grads[i].reshape({-1}));
      std::vector<at::Tensor> flat{at::cat(views).to(s.comm_device)};
      works.push_back(s.group->allreduce(flat));  // all buckets in flight, then wait
      flats.push_back(flat[0]);
    }
    for (auto& w : works) Impl::wait(w);
  });
  const double inv = 1.0 / static_cast<double>(s.o.world_size);
  for (std::size_t k = 0; k < buckets.size(); ++k) {
    auto flat = flats[k].mul_(inv);
    std::int64_t offset = 0;
    for (auto i : buckets[k]) {
      auto& g = grads[i];
      g.copy_(flat.slice(0, offset, offset + g.numel()).view_as(g));
      offset += g.numel();
    }
  }
}

void Distributed::broadcast(at::Tensor& t, int root, const std::string& what) {
  auto& s = *impl_;
  std::vector<at::Tensor> v{t.contiguous().to(s.comm_device)};
  c10d::BroadcastOptions bo;
  bo.rootRank = root;
  s.run("broadcast (" + what + ")", [&] { Impl::wait(s.group->broadcast(v, bo)); });
  t.copy_(v[0]);
}

void Distributed::barrier(const std::string& what) {
  auto& s = *impl_;
  s.run("barrier (" + what + ")", [&] { Impl::wait(s.group->barrier()); });
}

void Distributed::report_failure(const std::string& message) noexcept {
  try {
    const std::string m = message.substr(0, 2000);
    impl_->store->set(kFailedKey + std::to_string(impl_->o.rank), std::vector<std::uint8_t>(m.begin(), m.end()));
  } catch (...) {
  }
}

}  // namespace sdpo
