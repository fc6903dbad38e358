#include "udp_drops.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace turn::load {

namespace {

// /proc/net/udp: "sl local_address rem_address st tx_queue:rx_queue tr:tm->when
// retrnsmt uid timeout inode ref pointer drops"; local_address is HEXIP:HEXPORT.
uint64_t own_drops(const char* path, const std::unordered_set<uint16_t>& ports) {
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);  // header
    uint64_t total = 0;
    while (std::getline(f, line)) {
        std::istringstream in(line);
        std::vector<std::string> cols;
        for (std::string c; in >> c;) {
            cols.push_back(c);
        }
        if (cols.size() < 13) {
            continue;
        }
        const auto colon = cols[1].rfind(':');
        if (colon == std::string::npos) {
            continue;
        }
        const auto port = static_cast<uint16_t>(std::stoul(cols[1].substr(colon + 1), nullptr, 16));
        if (ports.count(port) != 0) {
            total += std::stoull(cols.back());
        }
    }
    return total;
}

// /proc/net/snmp: a "Udp:" header line naming the fields, then a values line.
uint64_t rcvbuf_errors(const char* proto_prefix) {
    std::ifstream f("/proc/net/snmp");
    std::string names;
    std::string values;
    while (std::getline(f, names)) {
        if (names.rfind(proto_prefix, 0) == 0 && std::getline(f, values)) {
            std::istringstream n(names);
            std::istringstream v(values);
            for (std::string name, value; n >> name && v >> value;) {
                if (name == "RcvbufErrors") {
                    return std::stoull(value);
                }
            }
        }
    }
    return 0;
}

}  // namespace

UdpDrops read_udp_drops(const std::unordered_set<uint16_t>& own_ports) {
    UdpDrops d;
    d.own = own_drops("/proc/net/udp", own_ports) + own_drops("/proc/net/udp6", own_ports);
    d.host = rcvbuf_errors("Udp: ");
    return d;
}

}  // namespace turn::load
