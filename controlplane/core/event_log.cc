#include "core/event_log.h"

#include <algorithm>
#include <atomic>

#include <spdlog/spdlog.h>

namespace turn::cp {

namespace {
std::atomic<bool> g_json{false};

void json_escape(std::string& out, std::string_view s) {
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
}
}  // namespace

void set_log_json(bool json) { g_json.store(json); }
bool log_json() { return g_json.load(); }

std::string format_event(std::string_view event, std::initializer_list<Field> fields, bool json) {
    return format_event(event, std::span<const Field>(fields.begin(), fields.size()), json);
}

std::string format_event(std::string_view event, std::span<const Field> fields, bool json) {
    std::string out;
    if (json) {
        out += "\"event\":\"";
        json_escape(out, event);
        out += '"';
        for (const auto& [k, v] : fields) {
            out += ",\"";
            out += k;
            out += "\":\"";
            json_escape(out, v);
            out += '"';
        }
        return out;
    }
    out += "event=";
    out += event;
    for (const auto& [k, v] : fields) {
        out += ' ';
        out += k;
        out += '=';
        // Quoted, with JSON's escapes inside, when the value would otherwise
        // not read back as one value: empty, with a space, quote, backslash
        // or '=', or with a control character (a client-chosen name with a
        // newline must not forge a second log line).
        const bool quote = v.empty() || std::any_of(v.begin(), v.end(), [](char c) {
                               return c == ' ' || c == '"' || c == '\\' || c == '=' ||
                                      static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
                           });
        if (quote) {
            out += '"';
            json_escape(out, v);
            out += '"';
        } else {
            out += v;
        }
    }
    return out;
}

namespace {
spdlog::level::level_enum to_spdlog(LogLevel l) {
    switch (l) {
        case LogLevel::kDebug: return spdlog::level::debug;
        case LogLevel::kInfo: return spdlog::level::info;
        case LogLevel::kWarn: return spdlog::level::warn;
        default: return spdlog::level::err;
    }
}
}  // namespace

bool log_enabled(LogLevel level) { return spdlog::should_log(to_spdlog(level)); }

void log_event(LogLevel level, std::string_view event, std::initializer_list<Field> fields) {
    log_event(level, event, std::span<const Field>(fields.begin(), fields.size()));
}

void log_event(LogLevel level, std::string_view event, std::span<const Field> fields) {
    const auto l = to_spdlog(level);
    if (!spdlog::should_log(l)) {
        return;
    }
    spdlog::log(l, "{}", format_event(event, fields, log_json()));
}

void log_event(std::string_view event, std::initializer_list<Field> fields) {
    log_event(LogLevel::kInfo, event, fields);
}

}  // namespace turn::cp
