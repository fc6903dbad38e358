// SIGHUP's configuration reload (core/config_reload.h) against the real
// protocol core: what it applies is in force for the next request on a loop
// that already runs, what it cannot apply is reported and left alone, and a
// reload it refuses changes nothing.
#include "core/config_reload.h"

#include "server_fixture.h"
#include "temp_files.h"

namespace turn::cp::test {
namespace {

using M = stun::Method;

class ReloadTest : public ServerTest {
protected:
    Answer allocate_as(uint16_t port, const std::string& user, const std::string& password) {
        Credentials c = creds(tuple(port), user);
        c.password = password;
        return *exchange(tuple(port), build(M::kAllocate, stun::Class::kRequest,
                                            [](auto& b) { b.add_requested_transport(stun::kProtoUdp); }, &c));
    }
};

TEST_F(ReloadTest, UsersAndRestSecretsChangeForTheNextRequest) {
    Config running = base_config();
    ASSERT_TRUE(allocate_as(1, "alice", "alice-pw").success());
    Config next = running;
    next.users = {{"carol", "carol-pw"}};
    next.rest_secrets = {"new-secret"};
    const auto r = apply_reload(*shared, running, next);
    EXPECT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.applied, (std::vector<std::string>{"[auth].users", "[auth].rest_secrets"}));
    EXPECT_TRUE(r.need_restart.empty());
    EXPECT_EQ(allocate_as(2, "alice", "alice-pw").code(), 401);  // removed
    EXPECT_TRUE(allocate_as(3, "carol", "carol-pw").success());
    const std::string rest_user = std::to_string(clock.unix_s() + 3600) + ":app";
    EXPECT_TRUE(allocate_as(4, rest_user, auth::rest_password("new-secret", rest_user)).success());
    EXPECT_EQ(allocate_as(5, rest_user, auth::rest_password("old-secret", rest_user)).code(), 401);
    EXPECT_EQ(running.users, next.users);  // now in force
    // The allocation alice made before stays until it can no longer refresh.
    EXPECT_NE(server->allocations().find(tuple(1)), nullptr);
    EXPECT_EQ(refresh(tuple(1), 600).code(), 401);
}

// [auth].users_file / rest_secrets_file: load_config reads them again, so
// rotating a secret is "write the file, reload"; a file that cannot be read
// is a configuration error, which applies nothing (main.cc logs it).
TEST_F(ReloadTest, SecretFilesAreReadAgain) {
    TempDir t;
    const std::string secrets = t.write("secrets", "secret-a\n");
    const std::string users = t.write("users", "bob:bob-pw\n");
    // base_config() as a file, with part of its credentials in the two files.
    const std::string text = "[server]\nlisten=[\"198.18.0.1:3478\", \"[fd00::1]:3478\"]\nrelay_ips=[\"198.18.0.1\", \"fd00::1\"]\n"
                             "relay_port_min=50000\nrelay_port_max=50099\nrealm=\"example.org\"\n"
                             "[auth]\nusers=[\"alice:alice-pw\"]\nusers_file=\"" + users + "\"\nrest_secrets_file=\"" + secrets +
                             "\"\n[metrics]\nlisten=\"\"\n";
    const auto load = [&]() {
        auto r = load_config_text(text, {});
        EXPECT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
        return std::holds_alternative<Config>(r) ? std::get<Config>(r) : Config{};
    };
    Config running = base_config();
    auto r = apply_reload(*shared, running, load());
    EXPECT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.applied, (std::vector<std::string>{"[auth].rest_secrets"}));  // the users are the same two
    EXPECT_TRUE(r.need_restart.empty()) << r.need_restart.front();
    EXPECT_EQ(running.rest_secrets_file, secrets);
    const std::string rest_user = std::to_string(clock.unix_s() + 3600) + ":app";
    EXPECT_TRUE(allocate_as(1, rest_user, auth::rest_password("secret-a", rest_user)).success());

    // Rotated: the new secret first, then (later) the old one removed.
    t.write("secrets", "secret-b\nsecret-a\n");
    r = apply_reload(*shared, running, load());
    EXPECT_EQ(r.applied, (std::vector<std::string>{"[auth].rest_secrets"}));
    EXPECT_TRUE(allocate_as(2, rest_user, auth::rest_password("secret-b", rest_user)).success());
    EXPECT_TRUE(allocate_as(3, rest_user, auth::rest_password("secret-a", rest_user)).success());
    t.write("secrets", "secret-b\n");
    t.write("users", "# bob left\ncarol:carol-pw\n");
    r = apply_reload(*shared, running, load());
    EXPECT_EQ(r.applied, (std::vector<std::string>{"[auth].users", "[auth].rest_secrets"}));
    EXPECT_EQ(allocate_as(4, rest_user, auth::rest_password("secret-a", rest_user)).code(), 401);
    EXPECT_TRUE(allocate_as(5, rest_user, auth::rest_password("secret-b", rest_user)).success());
    EXPECT_EQ(allocate_as(6, "bob", "bob-pw").code(), 401);
    EXPECT_TRUE(allocate_as(7, "carol", "carol-pw").success());
    EXPECT_TRUE(allocate_as(8, "alice", "alice-pw").success());

    // The file gone: the reload is refused with the file named, and the running credentials stay.
    std::filesystem::remove(secrets);
    auto bad = load_config_text(text, {});
    ASSERT_TRUE(std::holds_alternative<ConfigError>(bad));
    EXPECT_EQ(std::get<ConfigError>(bad).message,
              "[auth].rest_secrets_file \"" + secrets + "\": no such file; check the path, or set \"\" for none");
    EXPECT_TRUE(allocate_as(9, rest_user, auth::rest_password("secret-b", rest_user)).success());
}

TEST_F(ReloadTest, PeerPolicyChangesForTheNextPermission) {
    Config running = base_config();
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("198.18.9.9:7000");
    ASSERT_TRUE(create_permission(tuple(), {peer}).success());
    Config next = running;
    next.deny_peers = {*Prefix::parse("198.18.9.0/24")};
    const auto r = apply_reload(*shared, running, next);
    EXPECT_EQ(r.applied, (std::vector<std::string>{"[policy].allow_peers / deny_peers"}));
    EXPECT_EQ(create_permission(tuple(), {peer}).code(), 403);
    EXPECT_TRUE(create_permission(tuple(), {A("198.18.10.1:7000")}).success());
}

TEST_F(ReloadTest, PrivatePeersFollowTheReload) {
    Config running = base_config();
    ASSERT_TRUE(allocate(tuple()).success());
    const Address peer = A("10.1.2.3:7000");
    EXPECT_EQ(create_permission(tuple(), {peer}).code(), 403);  // denied by default
    Config next = running;
    next.allow_private_peers = true;
    auto r = apply_reload(*shared, running, next);
    EXPECT_EQ(r.applied, (std::vector<std::string>{"[policy].allow_private_peers"}));
    EXPECT_TRUE(create_permission(tuple(), {peer}).success());
    EXPECT_TRUE(running.allow_private_peers);
    next.allow_private_peers = false;
    r = apply_reload(*shared, running, next);
    EXPECT_EQ(r.applied, (std::vector<std::string>{"[policy].allow_private_peers"}));
    EXPECT_EQ(create_permission(tuple(), {A("192.168.7.7:7000")}).code(), 403);
}

TEST_F(ReloadTest, RefusedReloadChangesNothing) {
    Config running = base_config();
    Config next = running;
    next.users = {{"carol", std::string("pass\x01word")}};  // not an OpaqueString
    next.deny_peers = {*Prefix::parse("198.18.0.0/15")};
    const auto r = apply_reload(*shared, running, next);
    EXPECT_NE(r.error.find("[auth].users"), std::string::npos) << r.error;
    EXPECT_TRUE(r.applied.empty());
    EXPECT_TRUE(allocate_as(1, "alice", "alice-pw").success());
    EXPECT_TRUE(create_permission(tuple(1), {A("198.18.9.9:7000")}).success());  // policy untouched too
    EXPECT_EQ(running.users, base_config().users);
}

TEST_F(ReloadTest, WhatNeedsARestartIsReportedAndNotApplied) {
    Config running = base_config();
    Config next = running;
    next.listen = {A("198.18.0.1:3479")};
    next.max_per_user = 1;
    next.realm = "other.example";
    next.redirect_servers = {A("198.18.0.7:3478")};
    next.dscp = 46;
    const auto r = apply_reload(*shared, running, next);
    EXPECT_TRUE(r.error.empty());
    EXPECT_TRUE(r.applied.empty());
    EXPECT_EQ(r.need_restart, (std::vector<std::string>{"[server].listen / listen_tcp / listen_tls / listen_dtls", "[server].realm",
                                                        "[server].software / threads / strict_channel_range / dscp",
                                                        "[allocation]", "[redirect]"}));
    EXPECT_EQ(running.listen, base_config().listen);
    EXPECT_EQ(running.dscp, -1);
    ASSERT_TRUE(allocate_as(1, "alice", "alice-pw").success());
    EXPECT_TRUE(allocate_as(2, "alice", "alice-pw").success());  // max_per_user still 10
}

}  // namespace
}  // namespace turn::cp::test
