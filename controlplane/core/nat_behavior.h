// RFC 5780 (NAT behaviour discovery) on the server side: with an alternate
// IP and an alternate port configured for a family, the server answers
// Binding on four addresses of that family, (IP, port), (IP, alternate
// port), (alternate IP, port), (alternate IP, alternate port), tells clients
// the address that differs in both (OTHER-ADDRESS), and sends a response from
// a changed IP and/or port when CHANGE-REQUEST asks for it. A client compares
// what its NAT does across those addresses to learn its mapping and
// filtering behaviour (RFC 5780 section 4).
#pragma once

#include <optional>
#include <vector>

#include "core/config.h"
#include "net/address.h"

namespace turn::cp {

// Whether `received_on` (a listening address) is one of a family's four RFC
// 5780 addresses.
bool nat_discovery_enabled(const Config& c, const Address& received_on);

// The address a response leaves from when the request came in on
// `received_on` and asked to change the IP and/or the port; nothing when
// the family has no alternates or `received_on` is none of its addresses.
std::optional<Address> nat_changed_address(const Config& c, const Address& received_on, bool change_ip,
                                           bool change_port);

// The three listening addresses per family beyond [server].listen.
std::vector<Address> nat_extra_listeners(const Config& c);

}  // namespace turn::cp
