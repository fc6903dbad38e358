// Structured event logs (one line per allocation event, never per packet),
// as text "key=value" pairs or one JSON object per line ([log].format).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace turn::cp {

void set_log_json(bool json);
bool log_json();

using Field = std::pair<std::string_view, std::string>;
enum class LogLevel : uint8_t { kDebug, kInfo, kWarn, kError };
// Logs `event` with fields through spdlog's default logger. Every log line of
// the process goes through here, so [log].format = "json" yields one valid
// JSON object per line.
void log_event(std::string_view event, std::initializer_list<Field> fields);
void log_event(LogLevel level, std::string_view event, std::initializer_list<Field> fields);
void log_event(LogLevel level, std::string_view event, std::span<const Field> fields);  // fields built at run time
bool log_enabled(LogLevel level);
// Formats (exposed for tests).
std::string format_event(std::string_view event, std::initializer_list<Field> fields, bool json);
std::string format_event(std::string_view event, std::span<const Field> fields, bool json);

}  // namespace turn::cp
