#include "io/stream_handoff.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace turn::cp {

StreamHandoffs::StreamHandoffs(unsigned loops, std::string& error) {
    for (unsigned i = 0; i < loops; ++i) {
        auto in = std::make_unique<Inbox>();
        in->efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (in->efd < 0) {
            error = std::string("eventfd for the TCP/TLS connection handoff: ") + std::strerror(errno);
            for (auto& made : inboxes_) {
                ::close(made->efd);
            }
            inboxes_.clear();
            return;
        }
        inboxes_.push_back(std::move(in));
    }
}

StreamHandoffs::~StreamHandoffs() {
    for (auto& in : inboxes_) {
        for (auto& h : in->q) {
            SSL_free(h.ssl);
            ::close(h.fd);
        }
        ::close(in->efd);
    }
}

void StreamHandoffs::push(unsigned loop, StreamHandoff h) {
    Inbox& in = *inboxes_[loop];
    {
        std::lock_guard<std::mutex> lock(in.m);
        in.q.push_back(std::move(h));
    }
    const uint64_t one = 1;
    (void)!::write(in.efd, &one, sizeof one);
}

std::vector<StreamHandoff> StreamHandoffs::take(unsigned loop) {
    Inbox& in = *inboxes_[loop];
    uint64_t n = 0;
    (void)!::read(in.efd, &n, sizeof n);
    std::vector<StreamHandoff> out;
    std::lock_guard<std::mutex> lock(in.m);
    out.swap(in.q);
    return out;
}

}  // namespace turn::cp
