// Credentials the harness authenticates with: a static long-term user, or TURN
// REST API ephemeral credentials (draft-uberti-behave-turn-rest-00 section 2.2):
// username "<expiry unix time>:<name>", password base64(HMAC-SHA1(secret, username)).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace turn::load {

struct Credentials {
    std::string username;
    std::string password;
};

// "<now + ttl>:<name>", or "<now + ttl>" when name is empty.
std::string rest_username(uint64_t now_unix_s, uint64_t ttl_s, std::string_view name);

// REST credentials valid for ttl_s seconds from now_unix_s.
Credentials rest_credentials(std::string_view secret, std::string_view name, uint64_t now_unix_s,
                             uint64_t ttl_s);

}  // namespace turn::load
