#include "io/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace turn::cp {

std::optional<std::vector<uint8_t>> read_file(const std::string& path, size_t max_bytes, std::string& error) {
    // Non-blocking, and the descriptor itself checked: a FIFO or device put
    // at the path (even after a caller's stat) cannot hang start-up or a reload.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno != ENOENT) {
            error = "cannot open " + path + ": " + std::strerror(errno);
        }
        return std::nullopt;
    }
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        error = path + " is not a regular file";
        ::close(fd);
        return std::nullopt;
    }
    std::vector<uint8_t> out;
    uint8_t buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error = "cannot read " + path + ": " + std::strerror(errno);
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0) {
            break;
        }
        if (out.size() + static_cast<size_t>(n) > max_bytes) {
            error = path + " is larger than " + std::to_string(max_bytes) + " bytes";
            ::close(fd);
            return std::nullopt;
        }
        out.insert(out.end(), buf, buf + n);
    }
    ::close(fd);
    return out;
}

}  // namespace turn::cp
