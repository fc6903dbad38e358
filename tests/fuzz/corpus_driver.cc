// Runs a libFuzzer target over saved inputs without libFuzzer, so the corpus
// is an ordinary regression test (built with ASan + UBSan, run by meson test).
//
// Usage: <target>_corpus DIR_OR_FILE...
// Every regular file of each directory (sorted by name) and every file named
// directly is passed to LLVMFuzzerTestOneInput in its own exact-size heap
// buffer, so a read one byte past the input is an AddressSanitizer report.
// Fails if a directory holds no input: a missing corpus must not pass as an
// empty one.
//
// Targets that can say what an input made them do define
// fuzz_output_digest() (server_fuzz.cc: everything sent, and the checks'
// verdicts); for them two more modes:
//   <target>_corpus --digest DIR_OR_FILE...       prints "<digest hex>  <file>"
//                                                 per input, like sha256sum
//                                                 (compare two builds or runs)
//   <target>_corpus --determinism DIR_OR_FILE...  runs every input in order,
//       then all of them again in reverse order (each input's second run comes
//       after every other input), then each alone in a new process of this
//       program (its first input there); fails, naming the input, unless the
//       three digests of every input agree.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Optional (weak: null unless the target defines it): the digest of what the
// last LLVMFuzzerTestOneInput call did.
extern "C" __attribute__((weak)) void fuzz_output_digest(uint8_t out[32]);

namespace {

namespace fs = std::filesystem;

using Digest = std::array<uint8_t, 32>;

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

std::optional<Digest> digest_of(const fs::path& p) {
    if (!run_file(p)) {
        return std::nullopt;
    }
    Digest d{};
    fuzz_output_digest(d.data());
    return d;
}

std::string hex(const Digest& d) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (const uint8_t b : d) {
        s.push_back(kHex[b >> 4]);
        s.push_back(kHex[b & 15]);
    }
    return s;
}

// The inputs the arguments name: files as given, each directory's regular
// files sorted by name. False (after saying why) if one is missing, unreadable
// or an empty directory.
bool collect(const std::vector<std::string>& args, std::vector<fs::path>& out, bool say_counts) {
    for (const std::string& a : args) {
        const fs::path arg(a);
        std::error_code ec;
        if (fs::is_regular_file(arg, ec)) {
            out.push_back(arg);
            continue;
        }
        if (!fs::is_directory(arg, ec)) {
            std::fprintf(stderr, "%s: not a file or directory\n", a.c_str());
            return false;
        }
        std::vector<fs::path> files;
        for (const fs::directory_entry& e : fs::directory_iterator(arg, ec)) {
            if (e.is_regular_file()) {
                files.push_back(e.path());
            }
        }
        if (ec) {
            std::fprintf(stderr, "%s: %s\n", a.c_str(), ec.message().c_str());
            return false;
        }
        if (files.empty()) {
            std::fprintf(stderr, "%s: no inputs (an empty corpus is an error)\n", a.c_str());
            return false;
        }
        std::sort(files.begin(), files.end());
        if (say_counts) {
            std::printf("%s: %zu inputs\n", a.c_str(), files.size());
        }
        out.insert(out.end(), files.begin(), files.end());
    }
    return true;
}

// The digest of `p` run by a new process of this program (--digest p), so
// alone and first, with fresh statics and another heap layout.
std::optional<Digest> digest_in_new_process(const char* self, const fs::path& p) {
    int fds[2];
    if (pipe(fds) != 0) {
        std::perror("pipe");
        return std::nullopt;
    }
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
        std::perror("fork");
        return std::nullopt;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        const std::string path = p.string();
        char* const argv[] = {const_cast<char*>(self), const_cast<char*>("--digest"), const_cast<char*>(path.c_str()),
                              nullptr};
        execv("/proc/self/exe", argv);
        std::perror("execv /proc/self/exe");
        _exit(127);
    }
    close(fds[1]);
    std::string text;
    char buf[256];
    for (;;) {
        const ssize_t n = read(fds[0], buf, sizeof buf);
        if (n > 0) {
            text.append(buf, static_cast<size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "%s: the child process running it alone failed (status 0x%x)\n", p.c_str(), status);
        return std::nullopt;
    }
    Digest d{};
    if (text.size() < 64) {
        std::fprintf(stderr, "%s: no digest from the child process\n", p.c_str());
        return std::nullopt;
    }
    for (size_t i = 0; i < d.size(); ++i) {
        unsigned v = 0;
        if (std::sscanf(text.c_str() + 2 * i, "%2x", &v) != 1) {
            std::fprintf(stderr, "%s: no digest from the child process\n", p.c_str());
            return std::nullopt;
        }
        d[i] = static_cast<uint8_t>(v);
    }
    return d;
}

int check_determinism(const char* self, const std::vector<fs::path>& files) {
    std::vector<Digest> first(files.size());
    for (size_t i = 0; i < files.size(); ++i) {
        const auto d = digest_of(files[i]);
        if (!d) {
            return 1;
        }
        first[i] = *d;
    }
    std::vector<bool> bad(files.size(), false);
    for (size_t k = files.size(); k-- > 0;) {
        const auto d = digest_of(files[k]);
        if (!d) {
            return 1;
        }
        if (*d != first[k]) {
            std::fprintf(stderr, "NONDETERMINISTIC %s: %s in order, %s run again after all the others\n",
                         files[k].c_str(), hex(first[k]).c_str(), hex(*d).c_str());
            bad[k] = true;
        }
    }
    for (size_t i = 0; i < files.size(); ++i) {
        const auto d = digest_in_new_process(self, files[i]);
        if (!d) {
            return 1;
        }
        if (*d != first[i]) {
            std::fprintf(stderr, "NONDETERMINISTIC %s: %s in order, %s alone in a new process\n", files[i].c_str(),
                         hex(first[i]).c_str(), hex(*d).c_str());
            bad[i] = true;
        }
    }
    if (const auto n = std::count(bad.begin(), bad.end(), true); n != 0) {
        std::printf("%zu of %zu inputs gave different outputs or verdicts between runs\n", static_cast<size_t>(n),
                    files.size());
        return 1;
    }
    std::printf("ran %zu inputs three times (in order, again in reverse order, each alone in a new process): "
                "the same outputs and verdicts every time\n",
                files.size());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // in order with stderr in a test log
    std::vector<std::string> args(argv + 1, argv + argc);
    enum class Mode { kRun, kDigest, kDeterminism } mode = Mode::kRun;
    if (!args.empty() && (args[0] == "--digest" || args[0] == "--determinism")) {
        mode = args[0] == "--digest" ? Mode::kDigest : Mode::kDeterminism;
        args.erase(args.begin());
        if (fuzz_output_digest == nullptr) {
            std::fprintf(stderr, "%s: this target has no fuzz_output_digest()\n", argv[0]);
            return 2;
        }
    }
    if (args.empty()) {
        std::fprintf(stderr, "usage: %s [--digest | --determinism] DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    std::vector<fs::path> files;
    // --digest: only the digest lines on stdout (--determinism reads them).
    if (!collect(args, files, mode != Mode::kDigest)) {
        return 1;
    }
    if (mode == Mode::kDigest) {
        for (const fs::path& p : files) {
            const auto d = digest_of(p);
            if (!d) {
                return 1;
            }
            std::printf("%s  %s\n", hex(*d).c_str(), p.c_str());
        }
        return 0;
    }
    if (mode == Mode::kDeterminism) {
        return check_determinism(argv[0], files);
    }
    for (const fs::path& p : files) {
        if (!run_file(p)) {
            return 1;
        }
    }
    std::printf("ran %zu inputs, no failure\n", files.size());
    return 0;
}
