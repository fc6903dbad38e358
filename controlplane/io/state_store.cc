#include "io/state_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/event_log.h"

namespace turn::cp {

namespace {
constexpr size_t kNonceSecretBytes = 32;
}  // namespace

StateStore::StateStore(std::string dir) : dir_(std::move(dir)) {}

StateStore::~StateStore() { stop(); }

std::string StateStore::prepare() {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) {
        return "[state].dir: cannot create \"" + dir_ + "\": " + ec.message() +
               " (fix: choose a writable directory or create it)";
    }
    ::chmod(dir_.c_str(), 0700);
    const std::string probe = dir_ + "/.probe";
    std::string err;
    const uint8_t byte = 0;
    if (!write_file_atomically(probe, {&byte, 1}, err)) {
        return "[state].dir: \"" + dir_ + "\" is not writable: " + err;
    }
    ::unlink(probe.c_str());
    return {};
}

std::string StateStore::loop_path(unsigned loop) const { return dir_ + "/loop-" + std::to_string(loop) + ".state"; }

std::optional<std::vector<uint8_t>> StateStore::nonce_secret(std::string& error) {
    const std::string path = dir_ + "/nonce.key";
    if (auto d = read_file(path, 4096, error)) {
        if (d->size() != kNonceSecretBytes) {
            error = path + " holds " + std::to_string(d->size()) + " bytes, not " +
                    std::to_string(kNonceSecretBytes) + " (fix: delete it; a new one is made)";
            return std::nullopt;
        }
        return d;
    }
    if (!error.empty()) {
        return std::nullopt;
    }
    std::vector<uint8_t> secret(kNonceSecretBytes);
    if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) {
        error = "no randomness for the nonce secret";
        return std::nullopt;
    }
    if (!write_file_atomically(path, secret, error)) {
        return std::nullopt;
    }
    return secret;
}

std::optional<LoopSnapshot> StateStore::load(unsigned loop, std::string& error) const {
    const std::string path = loop_path(loop);
    auto d = read_file(path, kSnapshotMaxBytes, error);
    if (!d) {
        return std::nullopt;
    }
    auto s = decode_snapshot(*d, error);
    if (!s) {
        error = path + ": " + error;
    }
    return s;
}

std::vector<unsigned> StateStore::extra_snapshots(unsigned loops) const {
    std::vector<unsigned> out;
    for (unsigned i = loops; i < loops + 1024; ++i) {
        if (::access(loop_path(i).c_str(), F_OK) == 0) {
            out.push_back(i);
        }
    }
    return out;
}

void StateStore::start(unsigned loops) {
    loops_ = loops;
    thread_ = std::thread([this] { run(); });
}

void StateStore::submit(unsigned loop, std::vector<SavedAllocation> changed, std::vector<uint64_t> removed,
                        bool replace_all) {
    {
        std::lock_guard lock(mu_);
        pending_.push_back(Batch{loop, std::move(changed), std::move(removed), replace_all});
    }
    cv_.notify_one();
}

void StateStore::stop() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) {
        thread_.join();
    }
}

uint64_t StateStore::writes() const {
    std::lock_guard lock(mu_);
    return writes_;
}

uint64_t StateStore::write_errors() const {
    std::lock_guard lock(mu_);
    return write_errors_;
}

void StateStore::run() {
    std::unique_lock lock(mu_);
    for (;;) {
        cv_.wait(lock, [this] { return stop_ || !pending_.empty(); });
        if (pending_.empty()) {
            return;  // stop_ and nothing left to write
        }
        std::vector<Batch> batches;
        batches.swap(pending_);
        lock.unlock();
        std::map<unsigned, bool> touched;
        for (auto& b : batches) {
            auto& m = mirror_[b.loop];
            if (b.replace_all) {
                m.clear();
            }
            for (auto& a : b.changed) {
                const uint64_t id = a.id;
                m.insert_or_assign(id, std::move(a));
            }
            for (const uint64_t id : b.removed) {
                m.erase(id);
            }
            touched[b.loop] = true;
        }
        for (const auto& [loop, t] : touched) {
            (void)t;
            write_loop(loop);
        }
        lock.lock();
    }
}

void StateStore::write_loop(unsigned loop) {
    const auto& m = mirror_[loop];
    std::vector<const SavedAllocation*> all;
    all.reserve(m.size());
    for (const auto& [id, a] : m) {
        (void)id;
        all.push_back(&a);
    }
    const auto saved = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::system_clock::now().time_since_epoch())
                                                 .count());
    std::string err;
    const bool ok = write_file_atomically(loop_path(loop), encode_snapshot(loop, loops_, saved, all), err);
    if (!ok) {
        log_event("state_save_failed", {{"error", err}});
    }
    std::lock_guard lock(mu_);
    (ok ? writes_ : write_errors_)++;
}

bool write_file_atomically(const std::string& path, std::span<const uint8_t> data, std::string& error) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        error = "cannot create " + tmp + ": " + std::strerror(errno);
        return false;
    }
    size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error = "cannot write " + tmp + ": " + std::strerror(errno);
            ::close(fd);
            ::unlink(tmp.c_str());
            return false;
        }
        done += static_cast<size_t>(n);
    }
    // fdatasync: a crash of the machine (not only of the process) must not
    // leave a renamed but empty file behind.
    if (::fdatasync(fd) != 0 || ::close(fd) != 0) {
        error = "cannot sync " + tmp + ": " + std::strerror(errno);
        ::unlink(tmp.c_str());
        return false;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        error = "cannot rename " + tmp + " to " + path + ": " + std::strerror(errno);
        ::unlink(tmp.c_str());
        return false;
    }
    return true;
}

std::optional<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes, std::string& error) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            error = "cannot open " + path + ": " + std::strerror(errno);
        }
        return std::nullopt;
    }
    std::vector<uint8_t> out;
    uint8_t buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error = "cannot read " + path + ": " + std::strerror(errno);
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0) {
            break;
        }
        if (out.size() + static_cast<size_t>(n) > max_bytes) {
            error = path + " is larger than " + std::to_string(max_bytes) + " bytes";
            ::close(fd);
            return std::nullopt;
        }
        out.insert(out.end(), buf, buf + n);
    }
    ::close(fd);
    return out;
}

}  // namespace turn::cp
