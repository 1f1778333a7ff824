// A one-line progress bar for denoising steps on stderr (redrawn in place on a terminal,
// one line per step otherwise so logs stay readable).
#pragma once

#include <cstdio>

namespace vgen {

class ProgressBar {
 public:
  ProgressBar(int total, bool enabled);
  ~ProgressBar() { finish(); }
  void update(int step, double step_seconds);
  void finish();

 private:
  int total_;
  bool enabled_;
  bool tty_;
  double elapsed_ = 0.0;
  bool open_ = false;
};

}  // namespace vgen
