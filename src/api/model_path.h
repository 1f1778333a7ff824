// Where a model argument points: a checkpoint folder as given, or a Hugging Face repo id
// ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", optionally "@revision") found in the Hugging Face cache
// where huggingface_hub put it (`huggingface-cli download`, `hf download`, diffusers'
// from_pretrained), so that users need not know the snapshot folder.
#pragma once

#include <string>

namespace vgen {

// The hub cache folder, as huggingface_hub picks it: $HF_HUB_CACHE, else
// $HUGGINGFACE_HUB_CACHE (its older name), else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::string hugging_face_hub_cache();

// Whether `text` has the form of a repo id: "owner/name" or "owner/name@revision".
bool looks_like_repo_id(const std::string& text);

// `model` itself when it is an existing path or not a repo id; otherwise the snapshot folder of
// that repo in the hub cache: <cache>/models--owner--name/snapshots/<commit>, the commit read
// from refs/<revision> (default "main"), or the revision itself when it is a commit hash that
// has a snapshot. Throws vgen::Error saying where it looked and how to download the repo when
// it is not there.
std::string resolve_model_path(const std::string& model);

}  // namespace vgen
