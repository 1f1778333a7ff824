#!/usr/bin/env python3
"""Fails when an #include in src/ runs up the layers of vgen's architecture.

The layers, lowest first (a file may include its own layer or a lower one):

  0 core (runtime)   Tensor, dtype, device, allocator, ExecutionContext
  1 io media config  safetensors, checkpoints, JSON; MP4/images; engine YAML
  2 ops              the op list, Backend interface, dispatch, CUDA graphs
  3 backends         the CPU and CUDA implementations of the ops
  4 nn               Linear, norms, Attention, Conv
  5 text models schedulers
  6 pipelines        pipelines per family, the denoising loop, the registry
  7 api  8 serving  9 cli

A file's layer is its first folder under src/; an include's layer is the first folder of the
included path. The build runs this before compiling (target vgen_layer_check) and ctest runs it
too. Usage: check_layers.py [PROJECT_ROOT]
"""
import os
import re
import sys

RANK = {
    "core": 0, "runtime": 0,
    "io": 1, "media": 1, "config": 1,
    "ops": 2,
    "backends": 3,
    "nn": 4,
    "text": 5, "models": 5, "schedulers": 5,
    "pipelines": 6,
    "api": 7,
    "serving": 8,
    "cli": 9, "python": 9,
}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
EXTENSIONS = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh")


def main():
    root = os.path.join(sys.argv[1] if len(sys.argv) > 1 else os.getcwd(), "src")
    upward = []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(EXTENSIONS):
                continue
            path = os.path.join(folder, name)
            me = os.path.relpath(path, root).split(os.sep)[0]
            if me not in RANK:
                continue
            with open(path, errors="replace") as f:
                text = f.read()
            for line, included in ((text[: m.start()].count("\n") + 1, m.group(1)) for m in INCLUDE.finditer(text)):
                them = included.split("/")[0]
                if them in RANK and RANK[them] > RANK[me]:
                    upward.append(f"{os.path.relpath(path, os.path.dirname(root))}:{line}: {me} (layer {RANK[me]}) "
                                  f"includes {included} ({them}, layer {RANK[them]})")
    for u in upward:
        print(u, file=sys.stderr)
    if upward:
        print(f"error: {len(upward)} include(s) run up the layers (see tools/check_layers.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
