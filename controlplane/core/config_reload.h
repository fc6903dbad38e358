// SIGHUP: the configuration (file + the same command-line overrides) is read
// again and what can change under running event loops is applied at once:
//   [auth] users, rest_secrets   new requests authenticate against them; an
//   (and the users_file and      allocation made with a removed credential
//   rest_secrets_file entries,   ends when it can no longer refresh;
//   read again by load_config)
//   [policy] allow_peers,        new CreatePermission / ChannelBind / Connect
//            deny_peers,         and every Send indication; permissions
//            allow_private_peers already granted run out (5 minutes);
//   [tls] certificate,           re-read by the caller (io/tls.h): new
//         private_key            connections get the new certificate.
// Everything else needs a restart: a change there is reported and not
// applied. A configuration that does not load or validate changes nothing.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/shared.h"

namespace turn::cp {

struct ReloadOutcome {
    std::string error;                      // non-empty: nothing was applied
    std::vector<std::string> applied;       // keys whose new values are in force
    std::vector<std::string> need_restart;  // changed keys a reload does not apply
};

// `running` is what is in force (start-up values, then each reload's applied
// keys); on success its reloadable keys take `next`'s values.
ReloadOutcome apply_reload(Shared& shared, Config& running, const Config& next);

}  // namespace turn::cp
