#include "core/config.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "temp_files.h"

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

TEST(Config, ExternalIps) {
    const std::string auth = "[auth]\nusers=[\"a:b\"]\n";
    const std::string base = auth + "[server]\nlisten=[\"198.18.0.1:3478\", \"[fd00::1]:3478\"]\n";
    auto r = load_config_text(base + "external_ips=[\"198.19.0.7\"]\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    const Config& c = std::get<Config>(r);
    EXPECT_EQ(c.advertised(*Address::parse("198.18.0.1:50000")), *Address::parse("198.19.0.7:50000"));
    EXPECT_EQ(c.advertised(*Address::parse("[fd00::1]:50000")), *Address::parse("[fd00::1]:50000"));
    EXPECT_EQ(c.to_internal(*Address::parse("198.19.0.7:50001")), *Address::parse("198.18.0.1:50001"));
    EXPECT_EQ(c.to_internal(*Address::parse("198.19.0.8:50001")), *Address::parse("198.19.0.8:50001"));
    EXPECT_EQ(c.to_external(*Address::parse("198.18.0.1:50002")), *Address::parse("198.19.0.7:50002"));
    EXPECT_EQ(c.to_external(*Address::parse("198.18.0.2:50002")), *Address::parse("198.18.0.2:50002"));
    CliOverrides cli;
    cli.external_ips = {"198.19.0.9"};
    auto o = load_config_text(base + "external_ips=[\"198.19.0.7\"]\n", cli);
    ASSERT_TRUE(std::holds_alternative<Config>(o));
    EXPECT_EQ(std::get<Config>(o).external_ips, std::vector<Address>{*Address::parse("198.19.0.9")});

    EXPECT_EQ(error_of(base + "external_ips=[\"198.19.0.7\", \"198.19.0.8\"]\n"),
              "[server].external_ips: at most one address per family (the one the relay IP of that family is reached "
              "at); remove 198.19.0.8 or the other one of its family");
    EXPECT_EQ(error_of(base + "external_ips=[\"0.0.0.0\"]\n"),
              "[server].external_ips: \"0.0.0.0\" is a wildcard; relayed addresses must be concrete IPs clients can "
              "reach");
    EXPECT_EQ(error_of(auth + "[server]\nlisten=[\"198.18.0.1:3478\"]\nexternal_ips=[\"2001:db8::7\"]\n"),
              "[server].external_ips: 2001:db8::7 has no relay IP of its family to stand for; add one to relay_ips or "
              "remove it");
    EXPECT_EQ(error_of(base + "external_ips=[\"198.18.0.1\"]\n"),
              "[server].external_ips: 198.18.0.1 is the relay IP itself; list only what a NAT maps to it, or remove it");
    EXPECT_EQ(error_of(base + "external_ips=[\"198.19.0.7\"]\nalternate_ips=[\"198.18.0.2\"]\nalternate_port=3479\n"),
              "[server].alternate_ips: NAT behaviour discovery (RFC 5780) cannot be served from behind a NAT "
              "(external_ips is set); remove alternate_ips or external_ips");
    EXPECT_NE(error_of(base + "external_ips=[\"not-an-ip\"]\n").find("[server].external_ips"), std::string::npos);
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
    // A wildcard listener is "this relay" at its relay IP, and at every
    // address of the host's interfaces (loopback's on any host).
    const std::string wild = "[server]\nlisten=[\"0.0.0.0:3478\"]\nrelay_ips=[\"198.18.0.1\"]\n[auth]\nusers=[\"a:b\"]\n";
    EXPECT_NE(error_of(wild + "[redirect]\nservers=[\"198.18.0.1:3478\"]\n").find("own listener"), std::string::npos);
    EXPECT_NE(error_of(wild + "[redirect]\nservers=[\"127.0.0.1:3478\"]\n").find("own listener"), std::string::npos);
    EXPECT_EQ(error_of(wild + "[redirect]\nservers=[\"127.0.0.1:3479\"]\n"), "");  // another port: another relay
    CliOverrides cli;
    cli.redirect_servers = {"nonsense"};
    EXPECT_NE(error_of(base, cli).find("--redirect-server"), std::string::npos);
    cli.redirect_servers = {};
    cli.redirect_when = "never";
    EXPECT_NE(error_of(base, cli).find("--redirect-when"), std::string::npos);
}

TEST(Config, ProxyProtocolListenersAndTheirProxies) {
    const std::string base =
        "[server]\nlisten=[\"198.18.0.1:3478\"]\nlisten_tcp=[\"198.18.0.1:3478\", \"198.18.0.1:3479\"]\n"
        "listen_tls=[\"[fd00::1]:443\"]\n[tls]\ncertificate=\"c.pem\"\nprivate_key=\"k.pem\"\n"
        "[auth]\nusers=[\"a:b\"]\n[tcp]\n";
    auto r = load_config_text(base + "proxy_protocol=[\"198.18.0.1:3479\", \"[fd00::1]:443\"]\n"
                                      "proxy_protocol_from=[\"10.0.0.5/32\", \"fd00::/64\"]\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    const Config& c = std::get<Config>(r);
    ASSERT_EQ(c.tcp_proxy_protocol.size(), 2u);
    ASSERT_EQ(c.tcp_proxy_protocol_from.size(), 2u);
    EXPECT_TRUE(c.proxy_protocol_on(*Address::parse("198.18.0.1:3479")));
    EXPECT_TRUE(c.proxy_protocol_on(*Address::parse("[fd00::1]:443")));
    EXPECT_FALSE(c.proxy_protocol_on(*Address::parse("198.18.0.1:3478")));  // the direct TCP listener
    EXPECT_TRUE(c.tcp_proxy_protocol_from[0].contains(*Address::parse("10.0.0.5")));
    EXPECT_FALSE(c.tcp_proxy_protocol_from[0].contains(*Address::parse("10.0.0.6")));
    // Off by default.
    auto d = load_config_text(base, {});
    ASSERT_TRUE(std::holds_alternative<Config>(d));
    EXPECT_FALSE(std::get<Config>(d).proxy_protocol_on(*Address::parse("198.18.0.1:3479")));

    auto err = [&](const std::string& tcp) { return error_of(base + tcp); };
    // Not a TCP/TLS listener (the UDP-only port, another port, no port).
    EXPECT_NE(err("proxy_protocol=[\"198.18.0.1:3480\"]\nproxy_protocol_from=[\"10.0.0.5/32\"]\n")
                  .find("[tcp].proxy_protocol: 198.18.0.1:3480 is not one of [server].listen_tcp or listen_tls"),
              std::string::npos);
    EXPECT_NE(err("proxy_protocol=[\"198.18.0.1\"]\nproxy_protocol_from=[\"10.0.0.5/32\"]\n").find("[tcp].proxy_protocol:"),
              std::string::npos);
    EXPECT_NE(err("proxy_protocol=[\"198.18.0.1:3479\", \"198.18.0.1:3479\"]\nproxy_protocol_from=[\"10.0.0.5/32\"]\n")
                  .find("listed twice"),
              std::string::npos);
    // Each key without the other.
    EXPECT_NE(err("proxy_protocol=[\"198.18.0.1:3479\"]\n").find("[tcp].proxy_protocol_from: is empty"), std::string::npos);
    EXPECT_NE(err("proxy_protocol_from=[\"10.0.0.5/32\"]\n").find("[tcp].proxy_protocol_from: is set but"),
              std::string::npos);
    EXPECT_NE(err("proxy_protocol=[\"198.18.0.1:3479\"]\nproxy_protocol_from=[\"10.0.0.300/32\"]\n")
                  .find("[tcp].proxy_protocol_from: \"10.0.0.300/32\" is not a CIDR range"),
              std::string::npos);
}

// [auth].users_file and rest_secrets_file: real files, read by load_config
// (and again on every reload), their entries after the inline ones.
const std::string kListen = "[server]\nlisten=[\"127.0.0.1:3478\"]\n";

std::string in_quotes(const std::string& path) { return "\"" + path + "\""; }

TEST(ConfigSecretFiles, CommentsBlanksAndLineEndings) {
    test::TempDir t;
    const std::string users = t.write("users",
                                      "# static users\n"
                                      "\n"
                                      "   \t\r\n"
                                      "   # an indented comment\n"
                                      "alice:pw one\r\n"  // CRLF; inner spaces stay
                                      "bob:pw#x \t\r\n"   // '#' inside an entry is part of it
                                      " carol:c:d\n"      // leading blank and second ':' stay
                                      "dave:last");       // no final newline
    const std::string secrets = t.write("secrets", "# newest first\r\nnew-secret  \r\n\r\n#old-comment\n old-secret\n");
    auto r = load_config_text(kListen + "[auth]\nusers_file=" + in_quotes(users) + "\nrest_secrets_file=" + in_quotes(secrets) + "\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    const Config& c = std::get<Config>(r);
    EXPECT_EQ(c.users, (std::vector<std::pair<std::string, std::string>>{
                           {"alice", "pw one"}, {"bob", "pw#x"}, {" carol", "c:d"}, {"dave", "last"}}));
    EXPECT_EQ(c.rest_secrets, (std::vector<std::string>{"new-secret", " old-secret"}));
    EXPECT_EQ(c.users_file, users);
    EXPECT_EQ(c.rest_secrets_file, secrets);
    // A UTF-8 byte order mark (as Windows editors write) is not part of the first entry.
    const std::string bom = t.write("bom", "\xEF\xBB\xBF" "erin:e\r\n");
    auto b = load_config_text(kListen + "[auth]\nusers_file=" + in_quotes(bom) + "\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(b)) << std::get<ConfigError>(b).message;
    EXPECT_EQ(std::get<Config>(b).users, (std::vector<std::pair<std::string, std::string>>{{"erin", "e"}}));
}

TEST(ConfigSecretFiles, MergedAfterTheInlineEntries) {
    test::TempDir t;
    const std::string users = t.write("users", "bob:b\n");
    const std::string secrets = t.write("secrets", "file-1\nfile-2\n");
    const std::string text = kListen + "[auth]\nusers=[\"alice:a\"]\nrest_secrets=[\"inline-1\"]\nusers_file=" +
                             in_quotes(users) + "\nrest_secrets_file=" + in_quotes(secrets) + "\n";
    auto r = load_config_text(text, {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    EXPECT_EQ(std::get<Config>(r).users,
              (std::vector<std::pair<std::string, std::string>>{{"alice", "a"}, {"bob", "b"}}));
    EXPECT_EQ(std::get<Config>(r).rest_secrets, (std::vector<std::string>{"inline-1", "file-1", "file-2"}));
    // --user / --rest-secret replace the inline entries only; the files still count.
    CliOverrides cli;
    cli.users = {"carol:c"};
    cli.rest_secrets = {"cli-1"};
    r = load_config_text(text, cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    EXPECT_EQ(std::get<Config>(r).users,
              (std::vector<std::pair<std::string, std::string>>{{"carol", "c"}, {"bob", "b"}}));
    EXPECT_EQ(std::get<Config>(r).rest_secrets, (std::vector<std::string>{"cli-1", "file-1", "file-2"}));
}

TEST(ConfigSecretFiles, CommandLineReplacesTheKeys) {
    test::TempDir t;
    const std::string from_key = t.write("users-key", "alice:a\n");
    const std::string from_cli = t.write("users-cli", "bob:b\n");
    const std::string secrets_key = t.write("secrets-key", "key-secret\n");
    const std::string secrets_cli = t.write("secrets-cli", "cli-secret\n");
    const std::string text = kListen + "[auth]\nusers_file=" + in_quotes(from_key) + "\nrest_secrets_file=" +
                             in_quotes(secrets_key) + "\n";
    CliOverrides cli;
    cli.users_file = from_cli;
    cli.rest_secrets_file = secrets_cli;
    auto r = load_config_text(text, cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    EXPECT_EQ(std::get<Config>(r).users, (std::vector<std::pair<std::string, std::string>>{{"bob", "b"}}));
    EXPECT_EQ(std::get<Config>(r).rest_secrets, (std::vector<std::string>{"cli-secret"}));
    EXPECT_EQ(std::get<Config>(r).users_file, from_cli);
    // "" turns the key's file off.
    cli.users_file = "";
    r = load_config_text(text, cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    EXPECT_TRUE(std::get<Config>(r).users.empty());
    // A message names the option the path came from.
    cli.users_file = t.path("missing");
    EXPECT_EQ(error_of(text, cli).rfind("--users-file " + in_quotes(t.path("missing")) + ": no such file", 0), 0u)
        << error_of(text, cli);
    // Without a configuration file too, and an empty file is no credential (never the demo user).
    CliOverrides only;
    only.rest_secrets_file = secrets_cli;
    auto bare = load_config(only);
    ASSERT_TRUE(std::holds_alternative<Config>(bare)) << std::get<ConfigError>(bare).message;
    EXPECT_TRUE(std::get<Config>(bare).users.empty());
    EXPECT_EQ(std::get<Config>(bare).rest_secrets, (std::vector<std::string>{"cli-secret"}));
    only.rest_secrets_file = t.write("empty", "# nothing yet\n\n");
    bare = load_config(only);
    ASSERT_TRUE(std::holds_alternative<ConfigError>(bare));
    EXPECT_NE(std::get<ConfigError>(bare).message.find("[auth]: no credentials (users_file / rest_secrets_file have no entries)"),
              std::string::npos)
        << std::get<ConfigError>(bare).message;
}

TEST(ConfigSecretFiles, ErrorsNameTheFileAndLine) {
    test::TempDir t;
    auto users_error = [&](const std::string& content) {
        return error_of(kListen + "[auth]\nusers=[\"alice:a\"]\nusers_file=" + in_quotes(t.write("users", content)) + "\n");
    };
    const std::string origin = "[auth].users_file " + in_quotes(t.path("users"));
    EXPECT_EQ(users_error("# users\nzed:z\nbob\n"), origin + ": line 3: an entry has no \":\"; write \"user:password\"");
    EXPECT_EQ(users_error("bob:\n"), origin + ": line 1: user \"bob\" has an empty password; write \"user:password\"");
    // A line without ':' may be a secret (a REST secrets file given as users_file): never quoted.
    EXPECT_EQ(users_error("bG9uZy1iYXNlNjQtc2VjcmV0\n").find("bG9uZy"), std::string::npos);
    // An empty name: the message does not repeat the rest of the line (a password).
    const std::string no_name = users_error("\n:hunter2-secret\n");
    EXPECT_EQ(no_name.rfind(origin + ": line 2: an entry has an empty user name", 0), 0u) << no_name;
    EXPECT_EQ(no_name.find("hunter2"), std::string::npos) << no_name;
    // A user in the file and inline, or twice in the file.
    EXPECT_EQ(users_error("bob:b\nalice:other\n"),
              origin + ": line 2: user \"alice\" is listed twice, here and in [auth].users (only one password "
                       "would work); keep one entry per user");
    EXPECT_EQ(users_error("bob:b\n\nbob:c\n"),
              origin + ": line 3: user \"bob\" is listed twice, here and on line 1 (only one password would work); "
                       "keep one entry per user");
    CliOverrides cli;
    cli.users = {"bob:cli"};
    const std::string with_cli = error_of(kListen + "[auth]\nusers_file=" + in_quotes(t.write("users", "bob:b\n")) + "\n", cli);
    EXPECT_NE(with_cli.find("line 1: user \"bob\" is listed twice, here and in --user"), std::string::npos) << with_cli;
    // OpaqueString (RFC 8265), as for the inline users, but with the line.
    const std::string control = users_error("bob:s3cr\x01t\n");
    EXPECT_EQ(control.rfind(origin + ": line 1: the password of \"bob\" is not a valid OpaqueString", 0), 0u) << control;
    EXPECT_EQ(control.find("s3cr"), std::string::npos) << control;
}

TEST(ConfigSecretFiles, FilesThatCannotBeUsed) {
    test::TempDir t;
    auto secrets_error = [&](const std::string& path) {
        return error_of(kListen + "[auth]\nusers=[\"a:b\"]\nrest_secrets_file=" + in_quotes(path) + "\n");
    };
    const std::string missing = t.path("missing");
    EXPECT_EQ(secrets_error(missing),
              "[auth].rest_secrets_file " + in_quotes(missing) + ": no such file; check the path, or set \"\" for none");
    EXPECT_EQ(secrets_error(t.dir), "[auth].rest_secrets_file " + in_quotes(t.dir) +
                                        ": is not a regular file but a directory; give the path of the file itself");
    // At most 1 MiB: exactly that much is read, one byte more is refused.
    std::string big = "secret\n";
    big += std::string(kSecretsFileMaxBytes - big.size() - 1, '#') + "\n";
    ASSERT_EQ(big.size(), kSecretsFileMaxBytes);
    EXPECT_EQ(secrets_error(t.write("big", big)), "");
    const std::string too_big = secrets_error(t.write("big", big + "x"));
    EXPECT_EQ(too_big.rfind("[auth].rest_secrets_file " + in_quotes(t.path("big")) + ": is larger than 1 MiB (1048577 bytes)", 0), 0u)
        << too_big;
    if (::geteuid() != 0) {  // root reads any file
        const std::string unreadable = secrets_error(t.write("unreadable", "s\n", 0000));
        EXPECT_NE(unreadable.find("Permission denied"), std::string::npos) << unreadable;
        EXPECT_NE(unreadable.find("chmod 0600"), std::string::npos) << unreadable;
    }
}

// One file named as both would turn every user entry into a REST secret.
TEST(ConfigSecretFiles, OneFileForUsersAndSecretsIsRefused) {
    test::TempDir t;
    const std::string f = t.write("both", "alice:pw\n");
    const std::string link = t.path("link");
    ASSERT_EQ(::symlink(f.c_str(), link.c_str()), 0);
    const std::string want = "[auth].rest_secrets_file " + in_quotes(link) + ": is the same file as [auth].users_file " +
                             in_quotes(f) + "; keep users (name:password lines) and REST secrets in two files";
    EXPECT_EQ(error_of(kListen + "[auth]\nusers_file=" + in_quotes(f) + "\nrest_secrets_file=" + in_quotes(link) + "\n"),
              want);
    EXPECT_NE(error_of(kListen + "[auth]\nusers_file=" + in_quotes(f) + "\nrest_secrets_file=" + in_quotes(f) + "\n")
                  .find("is the same file as"),
              std::string::npos);
    // Two files with the same content are fine.
    const std::string other = t.write("other", "alice:pw\n");
    EXPECT_EQ(error_of(kListen + "[auth]\nusers_file=" + in_quotes(f) + "\nrest_secrets_file=" + in_quotes(other) + "\n"),
              "");
}

TEST(ConfigSecretFiles, AtMostEightSecretsInAll) {
    test::TempDir t;
    const std::string four = t.write("four", "s5\ns6\n# comment\ns7\ns8\n");
    const std::string five = t.write("five", "s5\ns6\n# comment\ns7\ns8\ns9\n");
    const std::string inline4 = "rest_secrets=[\"s1\", \"s2\", \"s3\", \"s4\"]\n";
    auto r = load_config_text(kListen + "[auth]\n" + inline4 + "rest_secrets_file=" + in_quotes(four) + "\n", {});
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    EXPECT_EQ(std::get<Config>(r).rest_secrets.size(), 8u);
    EXPECT_EQ(error_of(kListen + "[auth]\n" + inline4 + "rest_secrets_file=" + in_quotes(five) + "\n"),
              "[auth].rest_secrets_file " + in_quotes(five) +
                  ": line 6: more than 8 REST secrets with the 4 of [auth].rest_secrets; keep at most 8 in all, newest "
                  "first, and drop the oldest");
    const std::string nine = t.write("nine", "1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    EXPECT_EQ(error_of(kListen + "[auth]\nrest_secrets_file=" + in_quotes(nine) + "\n"),
              "[auth].rest_secrets_file " + in_quotes(nine) +
                  ": line 9: more than 8 REST secrets; keep at most 8 in all, newest first, and drop the oldest");
    // The inline list alone: the existing message.
    EXPECT_NE(error_of(kListen + "[auth]\nrest_secrets=[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]\n")
                  .find("[auth].rest_secrets: at most 8 secrets"),
              std::string::npos);
}

TEST(ConfigSecretFiles, FilesOthersMayReadAreReported) {
    test::TempDir t;
    const std::string users = t.write("users", "bob:b\n", 0640);
    const std::string secrets = t.write("secrets", "s\n", 0600);
    // A configuration file with secrets of its own counts; one without does not.
    const std::string with_secrets = t.write("with.toml", kListen + "[auth]\nusers=[\"a:b\"]\nrest_secrets_file=" +
                                                              in_quotes(secrets) + "\n", 0644);
    const std::string without = t.write("without.toml", kListen + "[auth]\nusers=[]\nusers_file=" + in_quotes(users) +
                                                            "\nrest_secrets_file=" + in_quotes(secrets) + "\n", 0644);
    CliOverrides cli;
    cli.config_path = with_secrets;
    auto r = load_config(cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    EXPECT_EQ(std::get<Config>(r).secret_files, (std::vector<std::string>{with_secrets, secrets}));
    auto open = secret_files_open_to_others(std::get<Config>(r));
    ASSERT_EQ(open.size(), 1u);
    EXPECT_EQ(open[0].path, with_secrets);
    EXPECT_EQ(open[0].mode, 0644u);

    cli.config_path = without;
    r = load_config(cli);
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
    open = secret_files_open_to_others(std::get<Config>(r));
    ASSERT_EQ(open.size(), 1u);
    EXPECT_EQ(open[0].path, users);
    EXPECT_EQ(open[0].mode, 0640u);
    ::chmod(users.c_str(), 0600);
    EXPECT_TRUE(secret_files_open_to_others(std::get<Config>(r)).empty());
    ::chmod(users.c_str(), 0604);  // others only
    EXPECT_EQ(secret_files_open_to_others(std::get<Config>(r)).size(), 1u);
}

// The demo configuration (deploy/turnrelay.toml, 0644 in a checkout) holds
// only the built-in demo credential: nothing to warn about. Any other inline
// user, the demo name with another password included, counts.
TEST(ConfigSecretFiles, TheBuiltInDemoCredentialAloneIsNoSecret) {
    test::TempDir t;
    for (const auto& [users, counts] : std::vector<std::pair<std::string, bool>>{
             {"[\"demo:demo-password\"]", false},
             {"[\"demo:hunter2\"]", true},
             {"[\"demo:demo-password\", \"bob:b\"]", true}}) {
        SCOPED_TRACE(users);
        const std::string conf = t.write("c.toml", kListen + "[auth]\nusers=" + users + "\n", 0644);
        CliOverrides cli;
        cli.config_path = conf;
        auto r = load_config(cli);
        ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<ConfigError>(r).message;
        EXPECT_EQ(secret_files_open_to_others(std::get<Config>(r)).size(), counts ? 1u : 0u);
    }
}

}  // namespace
}  // namespace turn::cp
