// What a step cache did in one generation: transformer calls computed and skipped per CFG
// branch and expert, and each call's decision in order (pipelines/cache/step_cache.h).
#pragma once

#include <string>
#include <vector>

namespace vgen {

struct CacheDecision {
  int step = 0;    // the scheduler step index
  int branch = 0;  // 0 conditional, 1 unconditional (Branch)
  int expert = 0;
  bool computed = true;
};

struct CacheStats {
  std::string backend;  // "teacache", ...; empty: no cache ran
  struct Entry {
    int branch = 0;  // 0 conditional, 1 unconditional
    int expert = 0;
    int computed = 0;
    int skipped = 0;
  };
  std::vector<Entry> entries;  // one per (branch, expert) that ran, in first-call order
  std::vector<CacheDecision> decisions;

  bool enabled() const { return !backend.empty(); }
  int calls() const { return computed() + skipped(); }
  int computed() const {
    int n = 0;
    for (const Entry& e : entries) n += e.computed;
    return n;
  }
  int skipped() const {
    int n = 0;
    for (const Entry& e : entries) n += e.skipped;
    return n;
  }
  // "teacache: skipped 12/40 transformer calls (cond 6/20, uncond 6/20)"; with two experts the
  // entries are "cond/expert 0 ...".
  std::string summary() const {
    std::string parts;
    bool experts = false;
    for (const Entry& e : entries) experts |= e.expert != 0;
    for (const Entry& e : entries) {
      if (!parts.empty()) parts += ", ";
      parts += e.branch == 0 ? "cond" : "uncond";
      if (experts) parts += "/expert " + std::to_string(e.expert);
      parts += " " + std::to_string(e.skipped) + "/" + std::to_string(e.computed + e.skipped);
    }
    return backend + ": skipped " + std::to_string(skipped()) + "/" + std::to_string(calls()) + " transformer calls (" +
           parts + ")";
  }
};

}  // namespace vgen
