// A value every event loop reads and SIGHUP may replace (the credentials,
// the peer policy: core/config_reload.h). Readers keep their own reference and look
// at one shared version number per use: a relaxed load of a line that is
// only written on reload, so nothing is contended per request or packet. A
// replaced value lives on until the last loop has moved to the new one.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

namespace turn::cp {

template <typename T>
class Reloadable {
public:
    explicit Reloadable(std::shared_ptr<const T> v) : value_(std::move(v)) {}

    void set(std::shared_ptr<const T> v) {
        std::lock_guard<std::mutex> lock(m_);
        value_ = std::move(v);
        version_.fetch_add(1, std::memory_order_release);
    }
    std::shared_ptr<const T> get() const {
        std::lock_guard<std::mutex> lock(m_);
        return value_;
    }
    uint64_t version() const { return version_.load(std::memory_order_acquire); }

private:
    mutable std::mutex m_;
    std::shared_ptr<const T> value_;
    std::atomic<uint64_t> version_{0};
};

// One reader's (one loop's) handle: the current value, refreshed when the
// version moved.
template <typename T>
class ReloadableView {
public:
    explicit ReloadableView(const Reloadable<T>& src) : src_(src), seen_(src.version()), cur_(src.get()) {}

    const T& operator*() {
        if (src_.version() != seen_) {
            seen_ = src_.version();
            cur_ = src_.get();
        }
        return *cur_;
    }
    const T* operator->() { return &**this; }

private:
    const Reloadable<T>& src_;
    uint64_t seen_;
    std::shared_ptr<const T> cur_;
};

}  // namespace turn::cp
