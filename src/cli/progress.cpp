#include "cli/progress.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace vgen {
namespace {

std::string duration(double s) {
  if (s < 60) return fmt::format("{:.1f}s", s);
  const long total = static_cast<long>(s + 0.5);
  if (total < 3600) return fmt::format("{}m{:02d}s", total / 60, static_cast<int>(total % 60));
  return fmt::format("{}h{:02d}m", total / 3600, static_cast<int>(total % 3600 / 60));
}

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The ETA of a phase expected to take `estimate` seconds in all, `elapsed` seconds in.
std::string eta_text(double estimate, double elapsed) {
  if (elapsed <= estimate) return fmt::format("eta {}", duration(estimate - elapsed));
  return fmt::format("over the {} estimate", duration(estimate));
}

}  // namespace

PhaseEstimator::PhaseEstimator(std::string file) : file_(std::move(file)) {
  if (file_.empty()) return;
  std::ifstream in(file_);
  if (!in) return;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    if (!j.is_object()) return;
    for (const auto& [key, value] : j.items())
      if (value.is_number() && value.get<double>() > 0) seconds_per_unit_[key] = value.get<double>();
  } catch (const std::exception&) {
    seconds_per_unit_.clear();  // a damaged file: start over
  }
}

std::optional<double> PhaseEstimator::estimate(const std::string& key, double units) const {
  const auto it = seconds_per_unit_.find(key);
  if (it == seconds_per_unit_.end() || !(units > 0)) return std::nullopt;
  return it->second * units;
}

void PhaseEstimator::record(const std::string& key, double units, double seconds) {
  if (units > 0 && seconds > 0) seconds_per_unit_[key] = seconds / units;
}

void PhaseEstimator::save() const {
  if (file_.empty() || seconds_per_unit_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(file_).parent_path(), ec);
  // Written beside and renamed, so that two runs never leave half a file.
  const std::string tmp = fmt::format("{}.{}.tmp", file_, getpid());
  {
    std::ofstream out(tmp);
    if (!out) return;
    out << nlohmann::json(seconds_per_unit_).dump(1) << "\n";
    if (!out) {
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, file_, ec);
  if (ec) std::filesystem::remove(tmp, ec);
}

std::string PhaseEstimator::default_file() {
  if (const char* v = std::getenv("VGEN_PHASE_RATES")) return v;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/vgen/phase_rates.json";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/vgen/phase_rates.json";
  return "";
}

Progress::Progress(int total_phases, bool enabled)
    : total_phases_(total_phases), enabled_(enabled), tty_(isatty(fileno(stderr)) != 0) {
  if (enabled_) thread_ = std::thread([this] { ticker(); });
}

Progress::~Progress() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (enabled_ && tty_ && drawn_width_ > 0) std::fputc('\n', stderr);
}

void Progress::begin(const std::string& what, double started_seconds, std::optional<double> estimate) {
  if (open_) end();
  std::lock_guard<std::mutex> lock(mutex_);
  ++phase_;
  open_ = true;
  what_ = what;
  estimate_ = estimate;
  steps_total_ = 0;
  last_print_ = Clock::now();
  phase_start_ = last_print_ - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(started_seconds));
  if (!enabled_) return;
  if (tty_) {
    draw_locked(false);
  } else {
    std::fprintf(stderr, "[%d/%d] %s...%s\n", phase_, total_phases_, what_.c_str(),
                 estimate_ ? fmt::format(" (about {})", duration(*estimate_)).c_str() : "");
    std::fflush(stderr);
  }
}

double Progress::end(double given_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  const double s = given_seconds >= 0.0 ? given_seconds : seconds(Clock::now() - phase_start_);
  if (!open_) return 0.0;
  open_ = false;
  if (enabled_) {
    if (tty_) {
      draw_locked(true, s);
    } else {
      std::fprintf(stderr, "[%d/%d] %s: done in %s\n", phase_, total_phases_, what_.c_str(), duration(s).c_str());
      std::fflush(stderr);
    }
  }
  return s;
}

void Progress::start_steps(int total) {
  std::lock_guard<std::mutex> lock(mutex_);
  steps_total_ = total;
  steps_done_ = 0;
  steps_seconds_ = 0.0;
  step_start_ = Clock::now();
  if (enabled_ && tty_) draw_locked(false);
}

void Progress::step(int step, double step_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  steps_done_ = step;
  steps_seconds_ += step_seconds;
  step_start_ = last_print_ = Clock::now();
  if (!enabled_) return;
  if (tty_) {
    draw_locked(false);
  } else {
    const double per_step = steps_seconds_ / step;
    std::fprintf(stderr, "[%d/%d] %s: step %d/%d, %.2f s/step, eta %s\n", phase_, total_phases_, what_.c_str(), step,
                 steps_total_, per_step, duration(per_step * (steps_total_ - step)).c_str());
    std::fflush(stderr);
  }
}

void Progress::set_total_phases(int total_phases) {
  std::lock_guard<std::mutex> lock(mutex_);
  total_phases_ = total_phases;
}

void Progress::note(const std::string& line) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (tty_ && drawn_width_ > 0) std::fprintf(stderr, "\r%*s\r", static_cast<int>(drawn_width_), "");
  std::fprintf(stderr, "%s\n", line.c_str());
  drawn_width_ = 0;
  if (enabled_ && tty_ && open_) draw_locked(false);
  std::fflush(stderr);
}

// The current line, redrawn in place (tty only). final_line: the phase has ended.
void Progress::draw_locked(bool final_line, double final_seconds) {
  const Clock::time_point now = Clock::now();
  const double elapsed = seconds(now - phase_start_);
  std::string line = fmt::format("[{}/{}] {}", phase_, total_phases_, what_);
  if (steps_total_ > 0) {
    const int width = 30;
    const int filled = steps_done_ * width / steps_total_;
    line += fmt::format(" [{}{}] {}/{}", std::string(filled, '#'), std::string(width - filled, '.'), steps_done_,
                        steps_total_);
    if (steps_done_ > 0) {
      const double per_step = steps_seconds_ / steps_done_;
      const double left = per_step * (steps_total_ - steps_done_) - (final_line ? 0.0 : seconds(now - step_start_));
      line += fmt::format("  {:.2f} s/step", per_step);
      if (!final_line) line += fmt::format("  eta {}", duration(std::max(0.0, left)));
    } else if (!final_line) {
      line += fmt::format("  step 1 running, {} (eta after it)", duration(seconds(now - step_start_)));
    }
  }
  line += final_line ? fmt::format("  done in {}", duration(final_seconds >= 0.0 ? final_seconds : elapsed)) : fmt::format("  {}", duration(elapsed));
  if (!final_line && steps_total_ == 0 && estimate_) line += "  " + eta_text(*estimate_, elapsed);
  const size_t pad = drawn_width_ > line.size() ? drawn_width_ - line.size() : 0;
  std::fprintf(stderr, "\r%s%*s", line.c_str(), static_cast<int>(pad), "");
  if (final_line) {
    std::fputc('\n', stderr);
    drawn_width_ = 0;
  } else {
    drawn_width_ = line.size();
  }
  std::fflush(stderr);
}

void Progress::ticker() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, std::chrono::seconds(1));
    if (stop_ || !open_) continue;
    if (tty_) {
      draw_locked(false);
    } else if (seconds(Clock::now() - last_print_) >= 30.0) {
      last_print_ = Clock::now();
      const double elapsed = seconds(last_print_ - phase_start_);
      std::fprintf(stderr, "[%d/%d] %s: still running after %s%s\n", phase_, total_phases_, what_.c_str(),
                   duration(elapsed).c_str(),
                   steps_total_ == 0 && estimate_ ? (", " + eta_text(*estimate_, elapsed)).c_str() : "");
      std::fflush(stderr);
    }
  }
}

}  // namespace vgen
