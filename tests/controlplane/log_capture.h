// The event log's lines (core/event_log.h) for the tests that check what was
// logged: spdlog's default logger while a LogCapture lives, in text form
// ([log].format "text"), the previous logger and format restored after.
// Readable while another thread (an event loop, the IPC thread) logs.
#pragma once

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/event_log.h"

namespace turn::cp::test {

class LogCapture {
public:
    LogCapture() : old_(spdlog::default_logger()), old_json_(log_json()), sink_(std::make_shared<Sink>()) {
        auto logger = std::make_shared<spdlog::logger>("capture", sink_);
        logger->set_level(spdlog::level::info);
        spdlog::set_default_logger(logger);
        set_log_json(false);
    }
    ~LogCapture() {
        set_log_json(old_json_);
        spdlog::set_default_logger(old_);
    }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    // The lines with `what` and `also`, in order.
    std::vector<std::string> lines(const std::string& what, const std::string& also = "") const {
        return sink_->lines(what, also);
    }
    // The first of them; "" if none.
    std::string line(const std::string& what, const std::string& also = "") const {
        const auto all = lines(what, also);
        return all.empty() ? std::string() : all.front();
    }

private:
    class Sink final : public spdlog::sinks::base_sink<std::mutex> {
    public:
        std::vector<std::string> lines(const std::string& what, const std::string& also) {
            std::lock_guard lk(mutex_);
            std::vector<std::string> out;
            for (const auto& l : lines_) {
                if (l.find(what) != std::string::npos && l.find(also) != std::string::npos) {
                    out.push_back(l);
                }
            }
            return out;
        }

    protected:
        void sink_it_(const spdlog::details::log_msg& m) override {
            lines_.emplace_back(m.payload.data(), m.payload.size());
        }
        void flush_() override {}

    private:
        std::vector<std::string> lines_;
    };
    std::shared_ptr<spdlog::logger> old_;
    bool old_json_;
    std::shared_ptr<Sink> sink_;
};

}  // namespace turn::cp::test
