// Runs a libFuzzer target over saved inputs without libFuzzer, so the corpus
// is an ordinary regression test (built with ASan + UBSan, run by meson test).
//
// Usage: <target>_corpus DIR_OR_FILE...
// Every regular file of each directory (sorted by name) and every file named
// directly is passed to LLVMFuzzerTestOneInput in its own exact-size heap
// buffer, so a read one byte past the input is an AddressSanitizer report.
// Fails if a directory holds no input: a missing corpus must not pass as an
// empty one.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

bool run_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) {
        std::fprintf(stderr, "cannot read %s\n", p.c_str());
        return false;
    }
    const std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    // A fresh allocation of exactly the input's size (at least 1 byte so the
    // pointer is never null, as under libFuzzer).
    const size_t size = bytes.size();
    const std::unique_ptr<uint8_t[]> buf(new uint8_t[size == 0 ? 1 : size]);
    std::copy(bytes.begin(), bytes.end(), buf.get());
    LLVMFuzzerTestOneInput(buf.get(), size);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    size_t total = 0;
    for (int i = 1; i < argc; ++i) {
        const fs::path arg(argv[i]);
        std::error_code ec;
        if (fs::is_regular_file(arg, ec)) {
            if (!run_file(arg)) {
                return 1;
            }
            ++total;
            continue;
        }
        if (!fs::is_directory(arg, ec)) {
            std::fprintf(stderr, "%s: not a file or directory\n", argv[i]);
            return 1;
        }
        std::vector<fs::path> files;
        for (const fs::directory_entry& e : fs::directory_iterator(arg, ec)) {
            if (e.is_regular_file()) {
                files.push_back(e.path());
            }
        }
        if (ec) {
            std::fprintf(stderr, "%s: %s\n", argv[i], ec.message().c_str());
            return 1;
        }
        if (files.empty()) {
            std::fprintf(stderr, "%s: no inputs (an empty corpus is an error)\n", argv[i]);
            return 1;
        }
        std::sort(files.begin(), files.end());
        for (const fs::path& p : files) {
            if (!run_file(p)) {
                return 1;
            }
        }
        std::printf("%s: %zu inputs\n", argv[i], files.size());
        total += files.size();
    }
    std::printf("ran %zu inputs, no failure\n", total);
    return 0;
}
