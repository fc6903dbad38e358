// Prometheus exposition (prometheus-cpp, its own HTTP thread). Values are read
// at scrape time from the loops' single-writer counters and the shared gauges,
// so they are live and the hot path never takes a lock.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/shared.h"
#include "core/stats.h"
#include "net/address.h"
#include "offload/ipc_server.h"

namespace prometheus {
class Exposer;
}

namespace turn::cp {

class MetricsExporter {
public:
    // `dataplane` (may be null): fast-path counters folded from the dataplane's reports.
    MetricsExporter(const Shared& shared, std::vector<const Stats*> loops, const DataplaneCounters* dataplane = nullptr);
    ~MetricsExporter();
    // Whether the HTTP server (civetweb) was built with IPv6: Debian 12's is not.
    static bool serves_ipv6();
    // Starts the HTTP endpoint; returns an error message on failure.
    std::string start(const std::string& listen);
    // Stops serving (joins the HTTP threads), in milliseconds; call before
    // the loops go away.
    void stop();

private:
    class Collector;
    const Shared& shared_;  // /health's answer (metrics.cc)
    std::shared_ptr<Collector> collector_;
    std::unique_ptr<prometheus::Exposer> exposer_;
    std::optional<Address> listen_;  // where stop() knocks
};

}  // namespace turn::cp
