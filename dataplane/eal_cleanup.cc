#include "eal_cleanup.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <set>
#include <string>

#include "common/dpdk.h"

namespace dp {
namespace {

// The file behind each hugepage segment (one per page, or one per segment
// list with --single-file-segments), read from the fd EAL keeps open for it.
// --no-huge and --in-memory segments have none, or an anonymous one.
int collect_hugepage_file(const rte_memseg_list* msl, const rte_memseg* ms, void* arg) {
    if (msl->external) {
        return 0;
    }
    const int fd = rte_memseg_get_fd_thread_unsafe(ms);
    if (fd < 0) {
        return 0;
    }
    char link[64];
    char path[4096];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) {
        return 0;
    }
    const std::string p(path, static_cast<size_t>(n));
    const std::string deleted = " (deleted)";
    if (p[0] == '/' && !(p.size() > deleted.size() && p.compare(p.size() - deleted.size(), deleted.size(), deleted) == 0)) {
        static_cast<std::set<std::string>*>(arg)->insert(p);
    }
    return 0;
}

// Every file in the runtime directory (EAL makes no subdirectories), then
// the directory.
void remove_runtime_dir(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) {
        return;
    }
    while (const dirent* e = readdir(d)) {
        const std::string name = e->d_name;
        if (name != "." && name != "..") {
            unlinkat(dirfd(d), name.c_str(), 0);
        }
    }
    closedir(d);
    if (rmdir(dir.c_str()) != 0) {
        std::fprintf(stderr, "turn-dataplane: could not remove DPDK's runtime directory %s\n", dir.c_str());
    }
}

}  // namespace

void eal_cleanup(bool keep_hugepage_files) {
    const bool primary = rte_eal_process_type() == RTE_PROC_PRIMARY;
    const std::string runtime_dir = rte_eal_get_runtime_dir();
    std::set<std::string> hugepage_files;
    if (primary && !keep_hugepage_files) {
        rte_memseg_walk(collect_hugepage_file, &hugepage_files);
    }
    rte_eal_cleanup();
    if (!primary) {
        return;  // the directory and the pages are the primary's
    }
    for (const auto& f : hugepage_files) {
        unlink(f.c_str());
    }
    if (!runtime_dir.empty()) {
        remove_runtime_dir(runtime_dir);
    }
}

}  // namespace dp
