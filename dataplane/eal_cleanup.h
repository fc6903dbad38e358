// The end of an EAL session: rte_eal_cleanup() and the files DPDK 22.11's
// cleanup leaves behind.
#pragma once

namespace dp {

// Calls rte_eal_cleanup(), then, in a primary process, removes what it leaves:
// the hugepage files of the memory still allocated at exit (DPDK unlinks a
// page's file only when the page is freed; the ports, the EAL's own memzones
// and the telemetry keep some) unless `keep_hugepage_files`
// (--huge-unlink=never), and the runtime directory /var/run/dpdk/<prefix>
// (config, fbarray_*, hugepage_info: secondary processes' way in, of no use
// once the primary is gone). Call once, after every port is closed and every
// worker stopped; no DPDK call may follow.
void eal_cleanup(bool keep_hugepage_files);

}  // namespace dp
