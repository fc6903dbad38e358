// Real files for the configuration tests ([auth] secrets files, a --config
// file): a fresh temporary directory, removed with its contents afterwards.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace turn::cp::test {

struct TempDir {
    std::string dir;
    TempDir() {
        char tmpl[] = "/tmp/turn-config-test-XXXXXX";
        dir = ::mkdtemp(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string path(std::string_view name) const { return dir + "/" + std::string(name); }
    // Writes `text` (replacing the file) with permission bits `mode`; returns its path.
    std::string write(std::string_view name, std::string_view text, mode_t mode = 0600) const {
        const std::string p = path(name);
        {
            std::ofstream out(p, std::ios::binary | std::ios::trunc);
            out.write(text.data(), static_cast<std::streamsize>(text.size()));
        }
        ::chmod(p.c_str(), mode);
        return p;
    }
};

}  // namespace turn::cp::test
