// The smallest program on the vgen library: generate a short clip from a prompt and write it
// as an MP4 carrying how it was made (`vgen info` reads that back), or as a PNG for one frame.
//
//   hello_vgen MODEL OUTPUT.mp4|OUTPUT.png ["prompt"]
//
// MODEL is a diffusers checkpoint folder or a Hugging Face repo id in the Hugging Face cache.
#include <cstdio>
#include <string>

#include <vgen/media.h>
#include <vgen/visual_gen.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL OUTPUT.mp4|OUTPUT.png [PROMPT]\n", argv[0]);
    return 2;
  }
  const std::string output = argv[2];
  const bool png = output.size() > 4 && output.substr(output.size() - 4) == ".png";
  try {
    vgen::VisualGen gen(argv[1]);  // the GPU when one is usable, else the CPU
    vgen::GenerationParams params;  // unset fields take the model family's defaults
    params.prompt = argc > 3 ? argv[3] : "a red fox in the snow";
    params.height = 32;
    params.width = 48;
    params.num_frames = png ? 1 : 5;
    params.num_inference_steps = 2;
    params.seed = 42;
    const vgen::ResolvedParams resolved = gen.pipeline().resolve(params);
    const vgen::GenerationOutput out = gen.generate(resolved);
    if (png) {
      vgen::media::write_png(output, out.frames.select(0, 0), gen.metadata(resolved, out.fps));
    } else {
      vgen::media::VideoEncodeOptions options;
      options.fps = out.fps;
      options.metadata = gen.metadata(resolved, out.fps);
      vgen::media::write_mp4(output, out.frames, options);
    }
    std::printf("%s: %lld frames of %lldx%lld\n", output.c_str(), static_cast<long long>(out.frames.size(0)),
                static_cast<long long>(out.frames.size(2)), static_cast<long long>(out.frames.size(1)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
