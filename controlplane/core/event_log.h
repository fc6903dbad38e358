// Structured event logs (one line per allocation event, never per packet),
// as text "key=value" pairs or one JSON object per line ([log].format).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace turn::cp {

void set_log_json(bool json);
bool log_json();

using Field = std::pair<std::string_view, std::string>;
// Logs `event` with fields at info level through spdlog's default logger.
void log_event(std::string_view event, std::initializer_list<Field> fields);
// Formats (exposed for tests).
std::string format_event(std::string_view event, std::initializer_list<Field> fields, bool json);

}  // namespace turn::cp
