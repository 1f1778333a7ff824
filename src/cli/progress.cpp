#include "cli/progress.h"

#include <unistd.h>

#include <string>

namespace vgen {

ProgressBar::ProgressBar(int total, bool enabled) : total_(total), enabled_(enabled), tty_(isatty(fileno(stderr)) != 0) {}

void ProgressBar::update(int step, double step_seconds) {
  if (!enabled_) return;
  elapsed_ += step_seconds;
  const int width = 30;
  const int filled = total_ > 0 ? step * width / total_ : width;
  const std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
  const double per_step = elapsed_ / step;
  const double eta = per_step * (total_ - step);
  std::fprintf(stderr, "%sdenoising [%s] %d/%d  %.2f s/step  eta %.1fs%s", tty_ ? "\r" : "", bar.c_str(), step, total_,
               per_step, eta, tty_ ? "" : "\n");
  std::fflush(stderr);
  open_ = tty_;
}

void ProgressBar::finish() {
  if (enabled_ && open_) std::fputc('\n', stderr);
  open_ = false;
}

}  // namespace vgen
