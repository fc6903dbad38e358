// The main() of the seed generators (worker_seeds.cc, server_seeds.cc):
// writes each named input as a file in the directory named on the command
// line, creating it if needed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace fuzzseeds {

using Files = std::vector<std::pair<std::string, std::vector<uint8_t>>>;

inline int write_seeds(int argc, char** argv, const Files& files) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const std::filesystem::path dir(argv[1]);
    std::filesystem::create_directories(dir);
    for (const auto& [name, b] : files) {
        std::ofstream f(dir / name, std::ios::binary);
        f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
        if (!f) {
            std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
            return 1;
        }
    }
    std::printf("%zu inputs in %s\n", files.size(), dir.c_str());
    return 0;
}

}  // namespace fuzzseeds
