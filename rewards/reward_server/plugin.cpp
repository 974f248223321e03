// Reward `reward_server`: scores come from a separate process that the plugin starts from the
// option `command` and talks to over its stdin/stdout pipes, with protocol version 1
// (README.md). Any Python reward model can be plugged in this way without writing C++;
// example_server.py is the reference server.
//
// Per request: the images are quantized to uint8 NHWC, sent after a JSON header line, and one
// JSON answer line is read back within `timeout_seconds`. A timeout or a server that dies is
// retried once on a freshly started server; a bad answer or a reported error is not (the same
// request would get the same answer).

#include "sdpo/core/plugin.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>

#include "protocol.h"
#include "sdpo/core/error.h"
#include "sdpo/core/reward.h"
#include "subprocess.h"

namespace {

using sdpo::reward_server::Answer;
using sdpo::reward_server::Subprocess;

struct RewardServerOptions {
  std::vector<std::string> command;
  double timeout_seconds = 60.0;
  double startup_timeout_seconds = 120.0;
  std::int64_t batch_size = 16;

  static RewardServerOptions read(sdpo::OptionReader& r) {
    RewardServerOptions o;
    o.command = r.strings(
        "command", {},
        "the server's argv, no shell, e.g. [\"/usr/bin/python3\", \"rewards/reward_server/example_server.py\"] "
        "(required; argv[0] is searched in PATH when it has no slash)");
    o.timeout_seconds = r.number(
        "timeout_seconds", 60.0, 0.001, 86400.0,
        "seconds a request may take, from its first byte sent to its answer; past it the server is restarted "
        "once and the request resent");
    o.startup_timeout_seconds = r.number(
        "startup_timeout_seconds", 120.0, 0.001, 86400.0,
        "seconds from starting the server to its handshake line (a model may load first)");
    o.batch_size = r.integer("batch_size", 16, 1, 4096, "images per request");
    return o;
  }
};

// The command as a user would type it, for messages: words with spaces or quotes are quoted.
std::string shell_words(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

std::string seconds_str(double s) {
  std::ostringstream o;
  o << s << " s";
  return o.str();
}

class RewardServerReward : public sdpo::Reward {
 public:
  explicit RewardServerReward(RewardServerOptions options)
      : options_(std::move(options)), who_("reward 'reward_server' (command: " + shell_words(options_.command) + ")") {
    start();
  }

  at::Tensor score(const at::Tensor& images, const std::vector<std::string>& prompts) override {
    // One request at a time on the one pipe: score() may be called from a worker thread.
    std::lock_guard<std::mutex> lock(mutex_);
    if (images.dim() != 4 || images.size(1) != 3) {
      throw sdpo::Error(who_ + ": expected images (B, 3, H, W), got sizes " + sizes_str(images));
    }
    const std::int64_t B = images.size(0), H = images.size(2), W = images.size(3);
    if (needs_prompts_ && static_cast<std::int64_t>(prompts.size()) != B) {
      throw sdpo::Error(
          who_ + ": the server needs prompts (its handshake says so), got " + std::to_string(prompts.size()) +
          " prompts for " + std::to_string(B) + " images");
    }
    if (B == 0) return at::zeros({0}, images.options().dtype(at::kFloat));
    const at::Tensor x = images.detach().to(at::kFloat);
    if (!at::isfinite(x).all().item<bool>()) {
      throw sdpo::NumericError(who_ + ": the images contain NaN or Inf; they cannot be quantized to send");
    }
    // The quantization of protocol version 1: levels round(clamp(x, 0, 1) * 255) (ties to even),
    // channels last, done on the images' device so only the bytes cross to the CPU.
    const at::Tensor pixels =
        x.clamp(0.0, 1.0).mul(255.0).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous().cpu();
    const std::uint8_t* data = pixels.data_ptr<std::uint8_t>();
    const std::int64_t image_bytes = H * W * 3;

    std::vector<double> scores;
    scores.reserve(static_cast<std::size_t>(B));
    try {
      for (std::int64_t start = 0; start < B; start += options_.batch_size) {
        const std::int64_t n = std::min(options_.batch_size, B - start);
        std::vector<std::string> chunk_prompts;
        if (needs_prompts_) chunk_prompts.assign(prompts.begin() + start, prompts.begin() + start + n);
        const auto s = request(data + start * image_bytes, n, H, W, chunk_prompts);
        scores.insert(scores.end(), s.begin(), s.end());
      }
    } catch (const sdpo::reward_server::SystemCallError& e) {
      // poll/read/write/waitpid failing for a reason other than the server's behaviour: nothing
      // is known about the conversation any more, so the server goes too.
      server_.reset();
      throw sdpo::Error(who_ + ": " + e.what());
    }
    return at::tensor(scores, at::kDouble).to(at::kFloat).to(images.device());
  }

  bool needs_prompts() const override { return needs_prompts_; }

 private:
  static std::string sizes_str(const at::Tensor& t) {
    std::string s = "(";
    for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
    return s + ")";
  }

  // Starts the server and reads its handshake. On any failure the server is stopped and
  // sdpo::Error thrown.
  void start() {
    try {
      start_unguarded();
    } catch (const sdpo::reward_server::SystemCallError& e) {
      server_.reset();
      throw sdpo::Error(who_ + ": cannot start the server: " + e.what());
    }
  }

  void start_unguarded() {
    server_.reset();
    server_ = std::make_unique<Subprocess>(options_.command);
    const auto deadline = Subprocess::Clock::now() + to_duration(options_.startup_timeout_seconds);
    std::string line;
    switch (server_->read_line(line, deadline, sdpo::reward_server::kMaxLineBytes)) {
      case Subprocess::Io::kDone:
        break;
      case Subprocess::Io::kTimeout:
        server_->stop(std::chrono::milliseconds(0));
        server_.reset();
        throw sdpo::Error(
            who_ + ": no handshake line within " + seconds_str(options_.startup_timeout_seconds) +
            " (startup_timeout_seconds); the server was killed");
      case Subprocess::Io::kClosed:
        throw sdpo::Error(who_ + ": the server " + stop_server(kCrashGrace) + " before its handshake");
      case Subprocess::Io::kTooLong:
        stop_server(std::chrono::milliseconds(0));
        throw sdpo::Error(
            who_ + ": its first line is longer than " + std::to_string(sdpo::reward_server::kMaxLineBytes) +
            " bytes; not a handshake");
    }
    sdpo::reward_server::Handshake h;
    try {
      h = sdpo::reward_server::parse_handshake(line);
    } catch (const sdpo::Error& e) {
      stop_server(Subprocess::kShutdownGrace);
      throw sdpo::Error(who_ + ": " + e.what());
    }
    if (started_ && h.needs_prompts != needs_prompts_) {
      stop_server(Subprocess::kShutdownGrace);
      throw sdpo::Error(
          who_ + ": the restarted server's handshake changed \"needs_prompts\" to " +
          (h.needs_prompts ? "true" : "false"));
    }
    needs_prompts_ = h.needs_prompts;
    started_ = true;
  }

  // Stops and reaps the server; returns how it ended ("exited with status 3", ...).
  std::string stop_server(std::chrono::milliseconds grace) {
    if (!server_) return "was not running";
    const std::string how = server_->stop(grace).describe();
    server_.reset();
    return how;
  }

  static Subprocess::Clock::duration to_duration(double seconds) {
    return std::chrono::duration_cast<Subprocess::Clock::duration>(std::chrono::duration<double>(seconds));
  }

  // One request with the retry of protocol version 1: a timeout or a dead server is retried once
  // on a fresh server; a second failure throws, naming both.
  std::vector<double> request(
      const std::uint8_t* pixels,
      std::int64_t count,
      std::int64_t height,
      std::int64_t width,
      const std::vector<std::string>& prompts) {
    // A server stopped by an earlier failure (or a bad answer) is started afresh.
    if (!server_) start();
    const std::int64_t id = next_id_++;
    const std::string header = sdpo::reward_server::request_header(id, count, height, width, prompts);
    std::vector<double> scores;
    auto first = attempt(id, header, pixels, count * height * width * 3, count, scores);
    if (!first) return scores;
    try {
      start();
    } catch (const sdpo::Error& e) {
      std::string why = e.what();
      if (why.rfind(who_ + ": ", 0) == 0) why.erase(0, who_.size() + 2);
      throw sdpo::Error(
          who_ + ": request " + std::to_string(id) + ": " + *first +
          "; restarting the server for the one retry failed: " + why);
    }
    const std::int64_t retry_id = next_id_++;
    const std::string retry_header = sdpo::reward_server::request_header(retry_id, count, height, width, prompts);
    auto second = attempt(retry_id, retry_header, pixels, count * height * width * 3, count, scores);
    if (!second) return scores;
    throw sdpo::Error(
        who_ + ": request " + std::to_string(retry_id) + " (the retry of request " + std::to_string(id) +
        "): " + *second + "; giving up after one retry (request " + std::to_string(id) + ": " + *first + ")");
  }

  // Sends one request and reads its answer. Returns nullopt with `scores` filled on success, or
  // what went wrong when it may be retried (timeout, dead server; the server is then stopped).
  // Throws when it may not: a reported error (server kept) or a bad answer (server stopped, since
  // the next line on the pipe could still belong to this request).
  std::optional<std::string> attempt(
      std::int64_t id,
      const std::string& header,
      const std::uint8_t* pixels,
      std::int64_t bytes,
      std::int64_t count,
      std::vector<double>& scores) {
    const auto deadline = Subprocess::Clock::now() + to_duration(options_.timeout_seconds);
    Subprocess::Io io = server_->write_all(header.data(), header.size(), deadline);
    if (io == Subprocess::Io::kDone) io = server_->write_all(pixels, static_cast<std::size_t>(bytes), deadline);
    if (io != Subprocess::Io::kDone) return lost(io, "while receiving the request");
    std::string line;
    io = server_->read_line(line, deadline, sdpo::reward_server::kMaxLineBytes);
    if (io == Subprocess::Io::kTooLong) {
      stop_server(std::chrono::milliseconds(0));
      throw sdpo::Error(
          who_ + ": request " + std::to_string(id) + ": the answer is longer than " +
          std::to_string(sdpo::reward_server::kMaxLineBytes) + " bytes without a newline; not retried");
    }
    if (io != Subprocess::Io::kDone) return lost(io, "before answering");

    Answer a = sdpo::reward_server::parse_answer(line, id, count);
    const std::string where = who_ + ": request " + std::to_string(id) + ": ";
    switch (a.kind) {
      case Answer::Kind::kScores:
        scores = std::move(a.scores);
        return std::nullopt;
      case Answer::Kind::kServerError:
        throw sdpo::Error(where + "the server reported an error: " + a.message + " (not retried)");
      case Answer::Kind::kNonFinite:
        stop_server(Subprocess::kShutdownGrace);
        throw sdpo::NumericError(where + a.message + "; not retried");
      case Answer::Kind::kViolation:
        break;
    }
    stop_server(Subprocess::kShutdownGrace);
    throw sdpo::Error(where + a.message + "; not retried");
  }

  // A retryable failure: stops the server and says what happened.
  std::string lost(Subprocess::Io io, const std::string& when) {
    if (io == Subprocess::Io::kTimeout) {
      stop_server(std::chrono::milliseconds(0));
      return "no answer within " + seconds_str(options_.timeout_seconds) + " (timeout_seconds); the server was killed";
    }
    // The pipe closed: usually the server died. Give it a moment to finish exiting so that its
    // status can be reported; one that closed stdout but keeps running is killed.
    return "the server " + stop_server(kCrashGrace) + " " + when;
  }

  static constexpr std::chrono::milliseconds kCrashGrace{2000};

  RewardServerOptions options_;
  std::string who_;
  std::unique_ptr<Subprocess> server_;
  bool started_ = false;
  bool needs_prompts_ = false;
  std::int64_t next_id_ = 1;
  std::mutex mutex_;
};

void register_reward_server(sdpo::Registry& r) {
  r.add<sdpo::Reward, RewardServerOptions>(
      "reward_server", "scores from a separate server process (any language) over stdin/stdout, protocol version 1",
      &RewardServerOptions::read, [](const RewardServerOptions& o, const sdpo::ComponentConfig& cfg) {
        // Checked here rather than in read(): read() also runs for `sdpo plugins`, with no options.
        if (o.command.empty() || o.command[0].empty()) {
          throw sdpo::ManifestError(
              cfg.file, cfg.json_path + ".command",
              "reward 'reward_server': required: the server's argv as a non-empty list of "
              "strings, e.g. [\"/usr/bin/python3\", \"rewards/reward_server/example_server.py\"]");
        }
        return std::make_shared<RewardServerReward>(o);
      });
}

}  // namespace

SDPO_DECLARE_PLUGIN("reward_server", "0.1.0", register_reward_server)
