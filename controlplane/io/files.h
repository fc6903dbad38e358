// Whole-file reads and atomic writes, written for io/state_store.cc's
// snapshots and nonce secret. write_file_atomically is defined there;
// read_file in io/files.cc, which the core sources include because
// core/config.cc reads the [auth] secrets files with it (io/tls.cc reads the
// certificate files with it too).
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
// Whole regular file, at most `max_bytes`; nullopt if missing (error empty),
// or unreadable or not a regular file (error set).
std::optional<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes, std::string& error);

}  // namespace turn::cp
