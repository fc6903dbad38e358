// The control plane's state directory ([server].state_dir): one allocation
// snapshot per event loop (core/state_snapshot.h) and the nonce secret, so
// that a restarted turn-relay takes over the previous process's allocations
// and still accepts the nonces it issued (clients see no 438 after a
// restart).
//
// Loops encode their snapshot on their own thread and submit() the bytes; a
// writer thread writes each loop's newest submission (temporary file,
// fdatasync, rename), so a slow disk never stalls relaying.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/state_snapshot.h"

namespace turn::cp {

class StateStore {
public:
    explicit StateStore(std::string dir);
    ~StateStore();
    StateStore(const StateStore&) = delete;
    StateStore& operator=(const StateStore&) = delete;

    // Creates the directory (0700) if needed and checks it is writable; "" or
    // an error naming the directory and what to fix.
    std::string prepare();
    // The nonce secret kept across restarts: read, or created (32 random
    // bytes, mode 0600) on first use.
    std::optional<std::vector<uint8_t>> nonce_secret(std::string& error);
    // Loop `loop`'s snapshot; nullopt with `error` empty if there is none.
    std::optional<LoopSnapshot> load(unsigned loop, std::string& error) const;
    // Snapshot files of loops numbered `loops` and above (left by a process
    // that ran more loops).
    std::vector<std::string> extra_snapshots(unsigned loops) const;

    // Starts the writer thread.
    void start();
    // Queues `bytes` as loop `loop`'s newest snapshot (replacing an unwritten one).
    void submit(unsigned loop, std::vector<uint8_t> bytes);
    // Writes everything queued, then stops the writer thread.
    void stop();
    uint64_t writes() const;
    uint64_t write_errors() const;

    std::string loop_path(unsigned loop) const;

private:
    void run();

    std::string dir_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::map<unsigned, std::vector<uint8_t>> pending_;
    bool stop_ = false;
    uint64_t writes_ = 0;
    uint64_t write_errors_ = 0;
    std::thread thread_;
};

// Writes `data` to `path` atomically (temporary file, fdatasync, rename), mode 0600.
bool write_file_atomically(const std::string& path, std::span<const uint8_t> data, std::string& error);
// Whole file, at most `max_bytes`; nullopt if missing (error empty) or unreadable (error set).
std::optional<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes, std::string& error);

}  // namespace turn::cp
