// The control plane's state directory ([server].state_dir): one allocation
// snapshot per event loop (core/state_snapshot.h) and the nonce secret, so
// that a restarted turn-relay takes over the previous process's allocations
// and still accepts the nonces it issued (clients see no 438 after a
// restart).
//
// Loops hand over what changed since their last save (O(changes) on the
// loop's thread); the writer thread merges it into its own copy of each loop's
// allocations, encodes the loop's snapshot and writes it (temporary file,
// fdatasync, rename), so neither the O(allocations) encoding nor a slow disk
// ever stalls relaying.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
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
    // The loop numbers, `loops` and above, of snapshot files there are (left
    // by a process that ran more loops; loop_path names them).
    std::vector<unsigned> extra_snapshots(unsigned loops) const;

    // Starts the writer thread; snapshots say they were written by `loops` loops.
    void start(unsigned loops);
    // Loop `loop`'s allocations that changed (added or updated) and those
    // removed since its last submission; `replace_all`: `changed` is all it has.
    void submit(unsigned loop, std::vector<SavedAllocation> changed, std::vector<uint64_t> removed,
                bool replace_all);
    // Writes everything queued, then stops the writer thread.
    void stop();
    uint64_t writes() const;
    uint64_t write_errors() const;

    std::string loop_path(unsigned loop) const;

private:
    struct Batch {
        unsigned loop;
        std::vector<SavedAllocation> changed;
        std::vector<uint64_t> removed;
        bool replace_all;
    };
    void run();
    void write_loop(unsigned loop);

    std::string dir_;
    unsigned loops_ = 1;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Batch> pending_;
    // Writer thread only: each loop's allocations as last submitted.
    std::map<unsigned, std::unordered_map<uint64_t, SavedAllocation>> mirror_;
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
