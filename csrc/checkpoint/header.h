// Parsing of a safetensors JSON header into tensor entries and metadata, bounded in time, memory
// and recursion whatever the input bytes are (the header is untrusted).
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"

namespace jepa {
namespace ckpt {

// Parses header[0:n]: one JSON object, then only spaces/whitespace. Fills `tensors` (JSON order)
// and `metadata`; checks dtypes, shapes and byte counts of each entry (not their placement).
// Throws FormatError naming what is wrong.
void parse_header(const char* header, std::size_t n, std::vector<TensorInfo>& tensors,
                  std::vector<std::pair<std::string, std::string>>& metadata, bool& has_metadata);

}  // namespace ckpt
}  // namespace jepa
