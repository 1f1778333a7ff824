// Progress on stderr for every phase of a generation (load, encode, denoise, decode, write):
// each phase says when it starts and how long it took; denoising gets a step bar with the time
// per step and an ETA. A phase that runs long is never silent: a ticker redraws the current
// line every second on a terminal (elapsed time, and the ETA of the step under way), and
// prints a "still ..." line every 30 s into a log. Phases other than denoising get an ETA from
// a PhaseEstimator: the rate measured by the previous phase of the same kind (this run, or the
// last run's, kept in the user's cache folder).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace vgen {

// How long a phase should take, from how long the same kind of phase took per unit of work
// before: seconds per byte loaded, per prompt encoded, per pixel decoded or written. A phase
// kind is a key naming what makes its rate ("load|cuda:0", "decode|cuda:0|/models/wan").
// The latest measurement of a key wins (this run's, else the one read from the file).
class PhaseEstimator {
 public:
  // file: where rates persist between runs (JSON; "" keeps them in memory only). A missing,
  // unreadable or malformed file is ignored: estimates are advisory.
  explicit PhaseEstimator(std::string file = default_file());
  // Seconds the phase `key` should take for `units` of work; nullopt when never measured.
  std::optional<double> estimate(const std::string& key, double units) const;
  // A finished phase: `units` of work in `seconds` (ignored unless both are positive).
  void record(const std::string& key, double units, double seconds);
  // Writes the rates to the file (best effort: a cache folder that cannot be written is skipped).
  void save() const;
  // $XDG_CACHE_HOME/vgen/phase_rates.json, else ~/.cache/vgen/phase_rates.json; "" without
  // HOME; VGEN_PHASE_RATES overrides it ("" disables it).
  static std::string default_file();

 private:
  std::string file_;
  std::map<std::string, double> seconds_per_unit_;
};

class Progress {
 public:
  // total_phases: how many begin() calls to number ("[2/5]"); enabled=false prints nothing.
  Progress(int total_phases, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Starts a phase: "[n/N] <what>...". Ends the previous one if still open. started_seconds:
  // how long ago it really began (a phase whose start is only noticed later). estimate: how
  // long it should take in all (PhaseEstimator), shown as an ETA.
  void begin(const std::string& what, double started_seconds = 0.0, std::optional<double> estimate = std::nullopt);
  // Ends the current phase with its duration (measured, or `seconds` when given: a phase whose
  // end is only noticed later); returns the seconds.
  double end(double seconds = -1.0);
  // Denoising: `total` steps; `step` (1-based) just finished after step_seconds.
  void start_steps(int total);
  void step(int step, double step_seconds);
  // The number of phases changed (a run that sizes its batches as it goes).
  void set_total_phases(int total_phases);
  // Prints a line of its own (a warning) without breaking the bar; printed even when disabled.
  void note(const std::string& line);

 private:
  using Clock = std::chrono::steady_clock;
  void draw_locked(bool final_line, double final_seconds = -1.0);
  void ticker();

  int total_phases_;
  const bool enabled_;
  const bool tty_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  int phase_ = 0;
  bool open_ = false;  // a phase is running
  std::string what_;
  std::optional<double> estimate_;  // seconds the current phase should take
  Clock::time_point phase_start_;
  Clock::time_point last_print_;
  // Steps, while denoising.
  int steps_total_ = 0;
  int steps_done_ = 0;
  double steps_seconds_ = 0.0;
  Clock::time_point step_start_;
  size_t drawn_width_ = 0;  // characters of the line being redrawn (tty)
  std::thread thread_;
};

}  // namespace vgen
