#include "credentials.h"

#include "auth/credential_store.h"

namespace turn::load {

std::string rest_username(uint64_t now_unix_s, uint64_t ttl_s, std::string_view name) {
    std::string u = std::to_string(now_unix_s + ttl_s);
    if (!name.empty()) {
        u += ':';
        u += name;
    }
    return u;
}

Credentials rest_credentials(std::string_view secret, std::string_view name, uint64_t now_unix_s,
                             uint64_t ttl_s) {
    Credentials c;
    c.username = rest_username(now_unix_s, ttl_s, name);
    c.password = auth::rest_password(secret, c.username);
    return c;
}

}  // namespace turn::load
