// The control plane's state directory ([server].state_dir): one allocation
// snapshot per event loop (core/state_snapshot.h) and the nonce secret, so
// that a restarted turn-relay takes over the previous process's allocations
// and still accepts the nonces it issued (clients see no 438 after a
// restart).
//
// Loops hand over what changed since their last save (O(changes) on the
// loop's thread); the writer thread merges it into its own copy of each loop's
// allocations, encodes the loop's snapshot and writes it (temporary file,
// fdatasync, rename), so neither the O(allocations) encoding nor the disk's
// sync ever stalls relaying.
//
// Ends between saves go to end journals (EndJournal, below), so that a crash
// between two saves does not bring back allocations that had ended: an
// append to the page cache on the loop's thread (the state directory belongs
// on a local disk; on a network file system that write could stall a loop).
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
#include <unordered_set>
#include <vector>

#include "core/state_snapshot.h"
#include "io/files.h"

namespace turn::cp {

class StateStore {
public:
    explicit StateStore(std::string dir);
    ~StateStore();
    StateStore(const StateStore&) = delete;
    StateStore& operator=(const StateStore&) = delete;

    // Creates the directory (0700) if needed, checks it is writable and
    // takes its lock (`lock`, flock held until this object is destroyed, with
    // the holder's PID in it): a second turn-relay given the same directory
    // (a manual start while the service runs) stops here, before it reads or
    // writes anything of the first one's. "" or an error naming the directory
    // and what to fix.
    std::string prepare();
    // What prepare() would refuse that can be told without keeping anything
    // or taking the lock (turn-relay --check-config, beside the relay that
    // holds it): `dir`, or the nearest of its ancestors that exists, must be
    // a directory this process can write in (tried: a probe file in it, or a
    // directory under the ancestor, removed at once); in an existing one,
    // its lock file must open (it is not locked) and its nonce secret, if
    // any, must be one. "" or the problem.
    static std::string check(const std::string& dir);
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
    // removed since its last submission; `replace_all`: `changed` is all it
    // has. `journals_upto`: the loop's end journals up to this sequence number
    // hold no allocation the snapshot will have (0: none), so the writer
    // deletes them once it has written that snapshot.
    void submit(unsigned loop, std::vector<SavedAllocation> changed, std::vector<uint64_t> removed,
                bool replace_all, uint64_t journals_upto = 0);
    // Writes everything queued, then stops the writer thread.
    void stop();
    uint64_t writes() const;
    uint64_t write_errors() const;

    std::string loop_path(unsigned loop) const;
    // Where the saving process's SO_REUSEPORT identity is kept
    // (app/main.cc reuseport_identity).
    std::string reuseport_path() const { return dir_ + "/reuseport-identity"; }

    // End journals (EndJournal): loop-N.ended.SEQ.
    std::string journal_path(unsigned loop, uint64_t seq) const;
    struct Ended {
        std::unordered_set<uint64_t> ids;  // allocations that ended after their loop's last save
        uint64_t max_id = 0;               // the highest of them (ids after it are new)
        uint64_t next_seq = 1;             // the sequence number this process's journals start at
        std::vector<std::string> errors;   // journals (or the directory) that could not be read
        // Journals of loops `loops` and above (the caller deletes them with
        // those loops' snapshots, which are never restored).
        std::vector<std::string> extra_journals;
    };
    // The journals the previous process left (before start()). Those of
    // loops below `loops` are deleted by their loop's first save.
    Ended ended_allocations(unsigned loops);

private:
    struct Batch {
        unsigned loop;
        std::vector<SavedAllocation> changed;
        std::vector<uint64_t> removed;
        bool replace_all;
        uint64_t journals_upto;
    };
    void run();
    bool write_loop(unsigned loop);
    // loop-N.ended.SEQ files in the directory: (loop, seq); `error` set if it
    // could not be read whole.
    std::vector<std::pair<unsigned, uint64_t>> list_journals(std::string& error) const;

    std::string dir_;
    int lock_fd_ = -1;  // prepare()'s lock on the directory
    unsigned loops_ = 1;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Batch> pending_;
    // Writer thread only: each loop's allocations as last submitted.
    std::map<unsigned, std::unordered_map<uint64_t, SavedAllocation>> mirror_;
    // Writer thread only (set before start()): per loop, the previous
    // process's journals (deleted with the loop's first written save, which
    // covers them all), the lowest sequence number of this process's not yet
    // deleted, and the highest a submitted batch covers.
    std::map<unsigned, std::vector<uint64_t>> old_journals_;
    std::map<unsigned, uint64_t> journal_low_;
    std::map<unsigned, uint64_t> journal_covered_;
    uint64_t first_journal_ = 1;
    bool stop_ = false;
    uint64_t writes_ = 0;
    uint64_t write_errors_ = 0;
    std::thread thread_;
};

// Allocations that ended since the loop's last save, written as they end:
// a loop saves at most every save_interval_ms, so without this a process
// that crashed between two saves would leave the next one allocations that
// had already ended (their clients had deleted them, or they had expired),
// holding their relayed ports and quota again until they expired, and
// counting their usage in a second end line. The loop appends the ids once
// per pass that ended any (write(2) with O_APPEND, no fsync: this survives a
// crash of the process, not necessarily one of the host) to
// loop-N.ended.SEQ; each submitted save closes the file and names its
// sequence number (StateStore::submit's journals_upto), and the writer
// deletes the files once the snapshot without those allocations is written.
// A file is closed at most once a minute (or at 1 MiB; roll_due), so that
// saves that keep failing leave a file a minute, not one per save. A
// restarted process skips every saved allocation a journal names
// (StateStore::ended_allocations). Ids are unique across processes
// (app/main.cc, and start-up keeps new ids above the journals' ones), so a
// journal never names another allocation.
class EndJournal {
public:
    static constexpr uint64_t kRollEveryMs = 60'000;
    static constexpr uint64_t kRollBytes = uint64_t{1} << 20;

    EndJournal(const StateStore& store, unsigned loop, uint64_t first_seq)
        : store_(store), loop_(loop), seq_(first_seq), closed_(first_seq - 1) {}
    ~EndJournal();
    EndJournal(const EndJournal&) = delete;
    EndJournal& operator=(const EndJournal&) = delete;

    // Appends the ids (opening the next file if none is open; a name that
    // exists is never reused); a failure is logged (state_journal_failed,
    // once per file) and leaves the save interval's window open for those
    // allocations, as without the journal. `now_ms`: the loop's clock.
    void append(std::span<const uint64_t> ids, uint64_t now_ms = 0);
    // Whether the current file should be closed at this save (one that
    // failed too, so that the next file is tried a minute after the failure).
    bool roll_due(uint64_t now_ms) const {
        return (fd_ >= 0 || broken_) && (bytes_ >= kRollBytes || now_ms - opened_ms_ >= kRollEveryMs);
    }
    // Closes the current file: the sequence number of the last file written
    // and closed (first_seq - 1 before any: the previous process's), which
    // the next submitted save covers.
    uint64_t roll();
    uint64_t closed() const { return closed_; }

private:
    void fail(const std::string& what);  // logs (with errno) once per file, closes it

    const StateStore& store_;
    unsigned loop_;
    uint64_t seq_;  // of the file open (or failed) or the next one
    uint64_t closed_;
    int fd_ = -1;
    uint64_t opened_ms_ = 0;
    uint64_t bytes_ = 0;
    bool broken_ = false;  // the current file failed: no more appends to it
};

}  // namespace turn::cp
