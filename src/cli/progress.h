// Progress on stderr for every phase of a generation (load, encode, denoise, decode, write):
// each phase says when it starts and how long it took; denoising gets a step bar with the time
// per step and an ETA. A phase that runs long is never silent: a ticker redraws the current
// line every second on a terminal (elapsed time, and the ETA of the step under way), and
// prints a "still ..." line every 30 s into a log.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

namespace vgen {

class Progress {
 public:
  // total_phases: how many begin() calls to number ("[2/5]"); enabled=false prints nothing.
  Progress(int total_phases, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Starts a phase: "[n/N] <what>...". Ends the previous one if still open. started_seconds:
  // how long ago it really began (a phase whose start is only noticed later).
  void begin(const std::string& what, double started_seconds = 0.0);
  // Ends the current phase with its duration (measured, or `seconds` when given: a phase whose
  // end is only noticed later); returns the seconds.
  double end(double seconds = -1.0);
  // Denoising: `total` steps; `step` (1-based) just finished after step_seconds.
  void start_steps(int total);
  void step(int step, double step_seconds);
  // Prints a line of its own (a warning) without breaking the bar; printed even when disabled.
  void note(const std::string& line);

 private:
  using Clock = std::chrono::steady_clock;
  void draw_locked(bool final_line, double final_seconds = -1.0);
  void ticker();

  const int total_phases_;
  const bool enabled_;
  const bool tty_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  int phase_ = 0;
  bool open_ = false;  // a phase is running
  std::string what_;
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
