#include "core/config.h"

#include <gtest/gtest.h>

namespace turn::cp {
namespace {

std::string error_of(std::string_view toml, const CliOverrides& cli = {}) {
    auto r = load_config_text(toml, cli);
    if (auto* e = std::get_if<ConfigError>(&r)) {
        return e->message;
    }
    return {};
}

TEST(Config, FullExampleLoads) {
    const char* text = R"(
[server]
listen = ["127.0.0.1:3478", "[::1]:3478"]
relay_ips = ["127.0.0.1", "::1"]
relay_port_min = 49152
relay_port_max = 65535
realm = "turnrelay.local"
software = "turnrelay"
threads = 0
[auth]
users = ["demo:demo-password"]
rest_secrets = []
nonce_lifetime_s = 3600
[allocation]
default_lifetime_s = 600
max_lifetime_s = 3600
max_per_user = 10
max_total = 10000
bandwidth_bps = 0
[policy]
allow_peers = []
deny_peers = []
unauth_per_ip_per_s = 20
[metrics]
listen = "127.0.0.1:9641"
[log]
level = "info"
format = "text"
[drain]
deadline_s = 30
)";
    auto r = load_config_text(text, {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    const Config& c = std::get<Config>(r);
    EXPECT_EQ(c.listen.size(), 2u);
    EXPECT_EQ(c.relay_ips.size(), 2u);
    EXPECT_EQ(c.users.at(0).first, "demo");
    EXPECT_EQ(c.users.at(0).second, "demo-password");
}

TEST(Config, NoFileMeansDemoDefaults) {
    auto r = load_config({});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    const Config& c = std::get<Config>(r);
    ASSERT_EQ(c.listen.size(), 2u);
    EXPECT_EQ(c.listen[0].to_string(), "127.0.0.1:3478");
    EXPECT_EQ(c.listen[1].to_string(), "[::1]:3478");
    EXPECT_EQ(c.users.at(0).first, "demo");
    EXPECT_EQ(c.relay_ips.size(), 2u);
}

TEST(Config, ErrorsNameTheKey) {
    EXPECT_NE(error_of("[server]\nrelay_port_min = 70000\n").find("[server].relay_port_min"), std::string::npos);
    EXPECT_NE(error_of("[server]\nlisten = [\"nonsense\"]\n").find("[server].listen"), std::string::npos);
    EXPECT_NE(error_of("[server]\nlisten=[\"127.0.0.1:1\"]\nrelay_ips = [\"127.0.0.1\", \"127.0.0.2\"]\n"
                       "[auth]\nusers=[\"a:b\"]\n")
                  .find("[server].relay_ips"),
              std::string::npos);
    EXPECT_NE(error_of("[auth]\nusers = [\"nocolon\"]\n").find("[auth].users"), std::string::npos);
    EXPECT_NE(error_of("[policy]\nallow_peers = [\"1.2.3.4/99\"]\n").find("[policy].allow_peers"), std::string::npos);
    EXPECT_NE(error_of("[auth]\nusers=[\"a:b\"]\n[log]\nlevel = \"loud\"\n").find("[log].level"), std::string::npos);
    EXPECT_NE(error_of("[server]\nbogus = 1\n").find("[server].bogus"), std::string::npos);
    EXPECT_NE(error_of("[server]\nlisten=[\"127.0.0.1:1\"]\n").find("[auth]"), std::string::npos);
    EXPECT_NE(error_of("[auth]\nusers=[\"a:b\"]\n[allocation]\ndefault_lifetime_s = 7200\n").find("default_lifetime_s"), std::string::npos);
    EXPECT_NE(error_of("[server\n").find("config:"), std::string::npos);
    EXPECT_NE(error_of("[auth]\nusers=[\"a:b\"]\n[allocation]\nbandwidth_bps = 7\n")
                  .find("[allocation].bandwidth_bps: must be 0 (unlimited) or at least 8"),
              std::string::npos);
    EXPECT_EQ(error_of("[auth]\nusers=[\"a:b\"]\n[allocation]\nbandwidth_bps = 8\n"), "");
    EXPECT_NE(error_of("[auth]\nusers=[\"a:b\"]\n[policy]\nallow_private_peers = \"yes\"\n")
                  .find("[policy].allow_private_peers: must be true or false"),
              std::string::npos);
}

TEST(Config, PrivatePeersDeniedUnlessAllowed) {
    auto r = load_config_text("[auth]\nusers=[\"a:b\"]\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_FALSE(std::get<Config>(r).allow_private_peers);
    r = load_config_text("[auth]\nusers=[\"a:b\"]\n[policy]\nallow_private_peers = true\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    EXPECT_TRUE(std::get<Config>(r).allow_private_peers);
}

TEST(Config, CliOverridesFile) {
    CliOverrides cli;
    cli.listen = {"127.0.0.1:5000"};
    cli.users = {"bob:pw"};
    cli.port_range = "50000-50010";
    cli.allow_peers = {"127.0.0.0/8"};
    auto r = load_config_text("[server]\nlisten=[\"127.0.0.1:3478\"]\n[auth]\nusers=[\"a:b\"]\n", cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    const Config& c = std::get<Config>(r);
    EXPECT_EQ(c.listen.at(0).port, 5000);
    EXPECT_EQ(c.users.at(0).first, "bob");
    EXPECT_EQ(c.relay_port_min, 50000);
    EXPECT_EQ(c.relay_port_max, 50010);
    EXPECT_EQ(c.allow_peers.size(), 1u);
    cli.port_range = "5-";
    EXPECT_NE(error_of("", cli).find("--port-range"), std::string::npos);
}

TEST(Config, DataplaneSocketFromFileAndCli) {
    const char* base = "[server]\nlisten=[\"127.0.0.1:3478\"]\n[auth]\nusers=[\"a:b\"]\n";
    auto r = load_config_text(base, {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).dataplane_socket, "");  // offload off by default
    r = load_config_text(std::string(base) + "[dataplane]\nsocket = \"/run/turnrelay/dataplane.sock\"\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).dataplane_socket, "/run/turnrelay/dataplane.sock");
    CliOverrides cli;
    cli.dataplane_socket = "/tmp/dp.sock";
    r = load_config_text(std::string(base) + "[dataplane]\nsocket = \"/run/x.sock\"\n", cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).dataplane_socket, "/tmp/dp.sock");
    EXPECT_NE(error_of(std::string(base) + "[dataplane]\nsocket = \"/" + std::string(200, 'x') + "\"\n")
                  .find("[dataplane].socket"),
              std::string::npos);
    EXPECT_NE(error_of(std::string(base) + "[dataplane]\nbogus = 1\n").find("[dataplane].bogus"), std::string::npos);
}

TEST(Config, StateDirFromFileAndCli) {
    const char* base = "[server]\nlisten=[\"127.0.0.1:3478\"]\n[auth]\nusers=[\"a:b\"]\n";
    auto r = load_config_text(base, {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).state_dir, "");  // nothing kept by default
    EXPECT_EQ(std::get<Config>(r).state_save_interval_ms, 1000u);
    r = load_config_text(std::string(base) + "[state]\ndir = \"/var/lib/turn-relay\"\nsave_interval_ms = 250\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).state_dir, "/var/lib/turn-relay");
    EXPECT_EQ(std::get<Config>(r).state_save_interval_ms, 250u);
    CliOverrides cli;
    cli.state_dir = "/tmp/st";
    r = load_config_text(std::string(base) + "[state]\ndir = \"/var/lib/x\"\n", cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).state_dir, "/tmp/st");
    EXPECT_NE(error_of(std::string(base) + "[state]\nsave_interval_ms = 5\n").find("[state].save_interval_ms"),
              std::string::npos);
    EXPECT_NE(error_of(std::string(base) + "[state]\ndirectory = \"/x\"\n").find("[state].directory"),
              std::string::npos);
}

TEST(Config, RedirectFromFileAndCli) {
    const std::string base = "[server]\nlisten=[\"198.18.0.1:3478\"]\nlisten_tls=[\"198.18.0.1:5349\"]\n"
                             "[tls]\ncertificate=\"/c.pem\"\nprivate_key=\"/k.pem\"\n[auth]\nusers=[\"a:b\"]\n";
    auto r = load_config_text(base, {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_TRUE(std::get<Config>(r).redirect_servers.empty());  // no redirect by default: drain answers 403
    EXPECT_EQ(std::get<Config>(r).redirect_when, Config::RedirectWhen::kDraining);
    r = load_config_text(base + "[redirect]\nservers=[\"198.18.0.2:3478\", \"[fd00::2]:3478\"]\n"
                                "tls_servers=[\"198.18.0.2:5349\"]\ntls_domain=\"turn2.example.org\"\nwhen=\"always\"\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    const Config& c = std::get<Config>(r);
    ASSERT_EQ(c.redirect_servers.size(), 2u);
    EXPECT_EQ(c.redirect_servers[1].to_string(), "[fd00::2]:3478");
    EXPECT_EQ(c.redirect_tls_servers.at(0).port, 5349);
    EXPECT_EQ(c.redirect_tls_domain, "turn2.example.org");
    EXPECT_EQ(c.redirect_when, Config::RedirectWhen::kAlways);
    CliOverrides cli;
    cli.redirect_servers = {"198.18.0.9:3478"};
    cli.redirect_when = "draining";
    r = load_config_text(base + "[redirect]\nservers=[\"198.18.0.2:3478\"]\nwhen=\"always\"\n", cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).redirect_servers.at(0).to_string(), "198.18.0.9:3478");
    EXPECT_EQ(std::get<Config>(r).redirect_when, Config::RedirectWhen::kDraining);
}

// [server].dscp: "keep" (the default) or 0..63; what relayed data then
// carries (ECN always kept); anything else stops start-up naming the key.
TEST(Config, DscpKeepOrFixed) {
    auto text = [](const std::string& server) { return "[server]\n" + server + "[auth]\nusers = [\"a:b\"]\n"; };
    auto keep = load_config_text(text(""), {});
    ASSERT_TRUE(std::holds_alternative<Config>(keep)) << error_of(text(""));
    const Config& k = std::get<Config>(keep);
    EXPECT_EQ(k.dscp, -1);
    EXPECT_EQ(k.relayed_tos(0xB9), 0xB9);
    auto explicit_keep = load_config_text(text("dscp = \"keep\"\n"), {});
    ASSERT_TRUE(std::holds_alternative<Config>(explicit_keep));
    EXPECT_EQ(std::get<Config>(explicit_keep).dscp, -1);
    for (int d : {0, 10, 46, 63}) {
        auto r = load_config_text(text("dscp = " + std::to_string(d) + "\n"), {});
        ASSERT_TRUE(std::holds_alternative<Config>(r)) << d;
        const Config& c = std::get<Config>(r);
        EXPECT_EQ(c.dscp, d);
        EXPECT_EQ(c.relayed_tos(0xB9), (d << 2) | 0x01) << "ECT(1) kept, DSCP replaced";
        EXPECT_EQ(c.relayed_tos(0x03), (d << 2) | 0x03) << "CE kept";
        EXPECT_EQ(c.relayed_tos(0), d << 2);
    }
    for (const char* bad : {"64", "-1", "\"46\"", "\"EF\"", "true", "4.5"}) {
        const std::string e = error_of(text(std::string("dscp = ") + bad + "\n"));
        EXPECT_NE(e.find("[server].dscp"), std::string::npos) << bad << ": " << e;
        EXPECT_NE(e.find("0..63"), std::string::npos) << e;
    }
}

TEST(Config, AdminSocket) {
    const std::string base = "[server]\nlisten=[\"127.0.0.1:3478\"]\n[auth]\nusers=[\"a:b\"]\n";
    auto r = load_config_text(base, {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).admin_socket, "");  // off unless configured
    r = load_config_text(base + "[admin]\nsocket = \"/run/turnrelay/admin.sock\"\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).admin_socket, "/run/turnrelay/admin.sock");
    CliOverrides cli;
    cli.admin_socket = "/tmp/a.sock";
    r = load_config_text(base + "[admin]\nsocket = \"/run/x.sock\"\n", cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    EXPECT_EQ(std::get<Config>(r).admin_socket, "/tmp/a.sock");
    EXPECT_NE(error_of(base + "[admin]\nsocket = \"/" + std::string(200, 'x') + "\"\n").find("[admin].socket"),
              std::string::npos);
    EXPECT_NE(error_of(base + "[admin]\nsocket = \"/run/s\"\n[dataplane]\nsocket = \"/run/s\"\n").find("[admin].socket"),
              std::string::npos);
    EXPECT_NE(error_of(base + "[admin]\nport = 1\n").find("[admin].port"), std::string::npos);
}

TEST(Config, DtlsListenersAndLimits) {
    const std::string tls = "[tls]\ncertificate=\"c.pem\"\nprivate_key=\"k.pem\"\n[auth]\nusers=[\"a:b\"]\n";
    const std::string base = "[server]\nlisten=[\"198.18.0.1:3478\"]\nlisten_dtls=[\"198.18.0.1:5349\"]\n";
    auto r = load_config_text(base + tls + "[dtls]\nmax_sessions=5\nmax_sessions_per_ip=2\nidle_timeout_s=9\n"
                                           "handshakes_per_ip_per_s=0\nmtu=1400\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    const Config& c = std::get<Config>(r);
    ASSERT_EQ(c.listen_dtls.size(), 1u);
    EXPECT_EQ(c.listen_dtls[0], *Address::parse("198.18.0.1:5349"));
    EXPECT_EQ(c.dtls_max_sessions, 5u);
    EXPECT_EQ(c.dtls_max_sessions_per_ip, 2u);
    EXPECT_EQ(c.dtls_idle_timeout_s, 9u);
    EXPECT_EQ(c.dtls_handshakes_per_ip_per_s, 0u);
    EXPECT_EQ(c.dtls_mtu, 1400u);
    CliOverrides cli;
    cli.listen_dtls = {"198.18.0.1:5350"};
    auto rc = load_config_text(base + tls, cli);
    ASSERT_TRUE(std::holds_alternative<Config>(rc));
    EXPECT_EQ(std::get<Config>(rc).listen_dtls.at(0).port, 5350);
    // Without the certificate: says which key and why.
    const std::string no_cert = error_of(base + "[auth]\nusers=[\"a:b\"]\n");
    EXPECT_NE(no_cert.find("[tls].certificate"), std::string::npos) << no_cert;
    EXPECT_NE(no_cert.find("listen_dtls"), std::string::npos) << no_cert;
    // A DTLS listener on a plain UDP listener's address (or under its wildcard) would share its socket group.
    for (const char* udp : {"198.18.0.1:5349", "0.0.0.0:5349"}) {
        const std::string e = error_of("[server]\nlisten=[\"" + std::string(udp) +
                                       "\"]\nrelay_ips=[\"198.18.0.1\"]\nlisten_dtls=[\"198.18.0.1:5349\"]\n" + tls);
        EXPECT_NE(e.find("[server].listen_dtls"), std::string::npos) << udp << ": " << e;
        EXPECT_NE(e.find("its own port"), std::string::npos) << e;
    }
    EXPECT_NE(error_of("[server]\nlisten=[\"198.18.0.1:3478\"]\nlisten_dtls=[\"198.18.0.1:5349\", \"198.18.0.1:5349\"]\n" + tls)
                  .find("listed twice"),
              std::string::npos);
    // RFC 5780's alternate port is a plain UDP listener too.
    EXPECT_NE(error_of("[server]\nlisten=[\"198.18.0.1:3478\"]\nalternate_ips=[\"198.18.0.2\"]\nalternate_port=5349\n"
                       "listen_dtls=[\"198.18.0.1:5349\"]\n" + tls)
                  .find("alternate_port"),
              std::string::npos);
    EXPECT_NE(error_of(base + tls + "[dtls]\nmtu=100\n").find("[dtls].mtu"), std::string::npos);
    EXPECT_NE(error_of(base + tls + "[dtls]\nmax_sessions=0\n").find("[dtls].max_sessions"), std::string::npos);
    EXPECT_NE(error_of(base + tls + "[dtls]\nsessions=1\n").find("[dtls].sessions"), std::string::npos);
    // DTLS clients are redirected to the TLS alternates: listen_dtls alone allows tls_servers.
    EXPECT_EQ(error_of(base + tls + "[redirect]\ntls_servers=[\"198.18.0.2:5349\"]\n"), "");
}

TEST(Config, RedirectErrorsSayWhatToFix) {
    const std::string base = "[server]\nlisten=[\"198.18.0.1:3478\"]\n[auth]\nusers=[\"a:b\"]\n";
    auto err = [&](const std::string& redirect) { return error_of(base + "[redirect]\n" + redirect); };
    EXPECT_NE(err("servers=[\"198.18.0.2\"]\n").find("[redirect].servers"), std::string::npos);       // no port
    EXPECT_NE(err("servers=[\"0.0.0.0:3478\"]\n").find("wildcard"), std::string::npos);
    EXPECT_NE(err("servers=[\"198.18.0.1:3478\"]\n").find("own listener"), std::string::npos);        // itself
    EXPECT_NE(err("tls_servers=[\"198.18.0.2:5349\"]\n").find("no listen_tls"), std::string::npos);
    EXPECT_NE(err("servers=[\"198.18.0.2:3478\"]\ntls_domain=\"x.example\"\n").find("[redirect].tls_domain"),
              std::string::npos);
    EXPECT_NE(err("when=\"always\"\n").find("needs servers"), std::string::npos);
    EXPECT_NE(err("servers=[\"198.18.0.2:3478\"]\nwhen=\"sometimes\"\n").find("\"draining\""), std::string::npos);
    EXPECT_NE(err("bogus=1\n").find("[redirect].bogus"), std::string::npos);
    // A wildcard listener is "this relay" at its relay IP.
    EXPECT_NE(error_of("[server]\nlisten=[\"0.0.0.0:3478\"]\nrelay_ips=[\"198.18.0.1\"]\n[auth]\nusers=[\"a:b\"]\n"
                       "[redirect]\nservers=[\"198.18.0.1:3478\"]\n")
                  .find("own listener"),
              std::string::npos);
    CliOverrides cli;
    cli.redirect_servers = {"nonsense"};
    EXPECT_NE(error_of(base, cli).find("--redirect-server"), std::string::npos);
    cli.redirect_servers = {};
    cli.redirect_when = "never";
    EXPECT_NE(error_of(base, cli).find("--redirect-when"), std::string::npos);
}

}  // namespace
}  // namespace turn::cp
