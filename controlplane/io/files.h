// Whole-file reads and atomic writes (defined in io/state_store.cc, whose
// snapshots and nonce secret they were written for; io/tls.cc reads the
// certificate files with read_file too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace turn::cp {

// Writes `data` to `path` atomically (temporary file, fdatasync, rename), mode 0600.
bool write_file_atomically(const std::string& path, std::span<const uint8_t> data, std::string& error);
// Whole file, at most `max_bytes`; nullopt if missing (error empty) or unreadable (error set).
std::optional<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes, std::string& error);

}  // namespace turn::cp
