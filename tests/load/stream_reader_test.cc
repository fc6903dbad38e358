// bench/load/stream_reader.h and stream_conn.h: reassembly of TURN messages
// from a TCP/TLS byte stream (RFC 8656 section 3.1, ChannelData padding 12.5),
// of fixed-size payloads from an RFC 6062 data connection after its
// ConnectionBind answer, and the connection's bounded output queue and connect
// errors.
#include "stream_reader.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <vector>

#include "clock.h"
#include "stream_conn.h"
#include "stun/builder.h"
#include "turn/channel_data.h"

namespace turn::load {
namespace {

using Bytes = std::vector<uint8_t>;

// A Send indication with a DATA attribute of `n` bytes (length is a multiple of 4).
Bytes stun_message(size_t n, uint8_t fill) {
    Bytes b(64 + n, 0);
    const std::array<uint8_t, 12> txid{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, fill};
    stun::MessageBuilder mb({b.data(), b.size()}, stun::Method::kSend, stun::Class::kIndication, txid);
    const auto d = mb.reserve(stun::attr::kData, n);
    std::memset(d.data(), fill, d.size());
    b.resize(mb.size());
    return b;
}

// ChannelData as it is on a stream: header, payload, zero padding to 4.
Bytes channel_data_padded(uint16_t channel, size_t n, uint8_t fill) {
    Bytes b(kChannelDataHeader + n + 3, 0);
    const Bytes payload(n, fill);
    b.resize(build_channel_data({b.data(), b.size()}, channel, {payload.data(), payload.size()}, true));
    return b;
}

// The messages on the stream and what the reader must hand out for each
// (ChannelData without its padding).
struct Stream {
    Bytes bytes;
    std::vector<Bytes> expect;
    void add(const Bytes& wire, size_t message_len) {
        bytes.insert(bytes.end(), wire.begin(), wire.end());
        expect.emplace_back(wire.begin(), wire.begin() + static_cast<std::ptrdiff_t>(message_len));
    }
};

Stream sample_stream() {
    Stream s;
    const Bytes big = stun_message(172, 0xAA);               // 20 + DATA(4 + 172)
    const Bytes small = stun_message(1, 0xDD);               // DATA padded to 4: 20 + 8
    s.add(big, big.size());
    s.add(channel_data_padded(0x4001, 5, 0xBB), 4 + 5);      // 3 bytes of padding
    s.add(channel_data_padded(0x4FFF, 8, 0xCC), 4 + 8);      // none needed
    s.add(small, small.size());
    s.add(channel_data_padded(0x4002, 0, 0x00), 4);          // empty payload
    return s;
}

// Feeds `chunks` (sizes summing to the stream) and collects every message.
std::vector<Bytes> feed(StreamReader& r, const Bytes& bytes, const std::vector<size_t>& chunks,
                        StreamReadStatus& last) {
    std::vector<Bytes> got;
    size_t at = 0;
    last = StreamReadStatus::kNeedMore;
    for (size_t c : chunks) {
        auto space = r.space();
        EXPECT_GE(space.size(), c);
        std::memcpy(space.data(), bytes.data() + at, c);
        r.commit(c);
        at += c;
        std::span<const uint8_t> m;
        while ((last = r.next(m)) == StreamReadStatus::kMessage) {
            got.emplace_back(m.begin(), m.end());
        }
        if (last != StreamReadStatus::kNeedMore) {
            break;
        }
    }
    return got;
}

TEST(LoadStreamReader, SampleStreamIsWellFormed) {
    const Stream s = sample_stream();
    EXPECT_EQ(s.bytes.size() % 4, 0u);
    ASSERT_EQ(s.expect.size(), 5u);
    EXPECT_EQ(s.expect[0].size(), 20u + 4 + 172);
    EXPECT_EQ(s.expect[1].size(), 9u);
    EXPECT_EQ(s.expect[3].size(), 28u);
    EXPECT_EQ(s.bytes.size(), 196u + 12 + 12 + 28 + 4);
}

TEST(LoadStreamReader, EveryTwoWaySplitGivesTheSameMessages) {
    const Stream s = sample_stream();
    for (size_t cut = 0; cut <= s.bytes.size(); ++cut) {
        StreamReader r;
        StreamReadStatus last;
        const auto got = feed(r, s.bytes, {cut, s.bytes.size() - cut}, last);
        ASSERT_EQ(last, StreamReadStatus::kNeedMore) << "cut at " << cut;
        ASSERT_EQ(got, s.expect) << "cut at " << cut;
        EXPECT_EQ(r.buffered(), 0u);
    }
}

TEST(LoadStreamReader, OneByteAtATime) {
    const Stream s = sample_stream();
    StreamReader r;
    StreamReadStatus last;
    const auto got = feed(r, s.bytes, std::vector<size_t>(s.bytes.size(), 1), last);
    EXPECT_EQ(last, StreamReadStatus::kNeedMore);
    EXPECT_EQ(got, s.expect);
}

TEST(LoadStreamReader, SeveralMessagesInOneReadAndPaddingSkipped) {
    const Stream s = sample_stream();
    StreamReader r;
    StreamReadStatus last;
    const auto got = feed(r, s.bytes, {s.bytes.size()}, last);
    ASSERT_EQ(got.size(), 5u);
    EXPECT_EQ(got, s.expect);
    // The padded ChannelData comes out without its padding and the next
    // message starts right after the padding.
    EXPECT_EQ(got[1].size(), 9u);
    EXPECT_EQ(got[1][0], 0x40);
    EXPECT_EQ(got[1][1], 0x01);
    EXPECT_EQ(got[2][1], 0xFF);
}

TEST(LoadStreamReader, ManyMessagesThroughTheBoundedBuffer) {
    // 40 x the sample (far more than the buffer holds) in chunks of 7 bytes:
    // the buffer compacts and never grows.
    const Stream one = sample_stream();
    Stream s;
    for (int i = 0; i < 40; ++i) {
        s.bytes.insert(s.bytes.end(), one.bytes.begin(), one.bytes.end());
        s.expect.insert(s.expect.end(), one.expect.begin(), one.expect.end());
    }
    StreamReader r(512);
    ASSERT_GT(s.bytes.size(), 4 * 512u);
    std::vector<size_t> chunks(s.bytes.size() / 7, 7);
    chunks.push_back(s.bytes.size() % 7);
    StreamReadStatus last;
    const auto got = feed(r, s.bytes, chunks, last);
    EXPECT_EQ(last, StreamReadStatus::kNeedMore);
    EXPECT_EQ(got, s.expect);
    EXPECT_LE(r.space().size(), 4 * 512u);
}

TEST(LoadStreamReader, OversizeLengthRejectedFromTheHeaderAlone) {
    // A STUN length of 65532 and a ChannelData length of 20000 exceed the
    // 16 KiB bound: rejected as soon as the length field is in, before the
    // body is buffered, and the error sticks.
    for (const Bytes& head : {Bytes{0x00, 0x17, 0xFF, 0xFC}, Bytes{0x40, 0x01, 0x4E, 0x20}}) {
        StreamReader r;
        StreamReadStatus last;
        feed(r, head, {head.size()}, last);
        EXPECT_EQ(last, StreamReadStatus::kOversize);
        EXPECT_TRUE(r.failed());
        EXPECT_TRUE(r.space().empty());
        std::span<const uint8_t> m;
        EXPECT_EQ(r.next(m), StreamReadStatus::kOversize);
    }
    // Exactly at the bound is accepted.
    StreamReader r(4 + 20);
    const Bytes cd = channel_data_padded(0x4000, 20, 7);
    StreamReadStatus last;
    EXPECT_EQ(feed(r, cd, {cd.size()}, last).size(), 1u);
    EXPECT_EQ(last, StreamReadStatus::kNeedMore);
    const Bytes cd2 = channel_data_padded(0x4000, 21, 7);  // 28 bytes with padding
    StreamReader r2(4 + 20);
    feed(r2, cd2, {cd2.size()}, last);
    EXPECT_EQ(last, StreamReadStatus::kOversize);
}

TEST(LoadStreamReader, MalformedFramesAreErrorsThatStick) {
    StreamReadStatus last;
    {
        StreamReader r;
        const Bytes b{0x80, 0, 0, 0};  // top bits 10: neither STUN nor ChannelData
        feed(r, b, {1}, last);
        EXPECT_EQ(last, StreamReadStatus::kBadType);
    }
    {
        StreamReader r;
        Bytes b = stun_message(4, 1);
        b[3] = 6;  // STUN length not a multiple of 4
        feed(r, b, {b.size()}, last);
        EXPECT_EQ(last, StreamReadStatus::kBadLength);
    }
    {
        // A good message, then garbage: the good one comes out, then the error.
        StreamReader r;
        Bytes b = channel_data_padded(0x4000, 4, 9);
        b.push_back(0xC0);
        const auto got = feed(r, b, {b.size()}, last);
        EXPECT_EQ(got.size(), 1u);
        EXPECT_EQ(last, StreamReadStatus::kBadType);
    }
}

// `count` payloads of `size` bytes as turn-load writes them into an RFC 6062
// pipe: no framing, first bytes that TURN framing would reject (0xC0: neither
// STUN nor ChannelData).
Bytes raw_records(size_t count, size_t size) {
    Bytes b;
    for (size_t i = 0; i < count; ++i) {
        Bytes rec(size, static_cast<uint8_t>(i));
        rec[0] = 0xC0;
        b.insert(b.end(), rec.begin(), rec.end());
    }
    return b;
}

TEST(LoadStreamReader, FixedCutAfterTheConnectionBindAnswer) {
    // The data connection: the ConnectionBind success response (STUN framing),
    // then the pipe's raw bytes, here already in the same read as the answer.
    const Bytes answer = stun_message(8, 0x11);
    const Bytes pipe = raw_records(3, 173);
    for (size_t cut = 0; cut <= pipe.size(); ++cut) {
        StreamReader r;
        Bytes first = answer;
        first.insert(first.end(), pipe.begin(), pipe.begin() + static_cast<std::ptrdiff_t>(cut));
        auto space = r.space();
        std::memcpy(space.data(), first.data(), first.size());
        r.commit(first.size());
        std::span<const uint8_t> m;
        ASSERT_EQ(r.next(m), StreamReadStatus::kMessage);
        EXPECT_EQ(Bytes(m.begin(), m.end()), answer);
        ASSERT_TRUE(r.cut_fixed(173));
        StreamReadStatus last;
        const Bytes rest(pipe.begin() + static_cast<std::ptrdiff_t>(cut), pipe.end());
        // What came with the answer is cut the same way, ahead of the rest.
        const auto got = feed(r, rest, {rest.size()}, last);
        ASSERT_EQ(last, StreamReadStatus::kNeedMore) << "cut at " << cut;
        ASSERT_EQ(got.size(), 3u) << "cut at " << cut;
        for (size_t i = 0; i < 3; ++i) {
            EXPECT_EQ(got[i], Bytes(pipe.begin() + static_cast<std::ptrdiff_t>(i * 173),
                                    pipe.begin() + static_cast<std::ptrdiff_t>((i + 1) * 173)));
        }
        EXPECT_EQ(r.buffered(), 0u);
    }
}

TEST(LoadStreamReader, FixedCutEverySplitAndThroughTheBoundedBuffer) {
    const Bytes pipe = raw_records(40, 173);  // 6920 bytes, more than 4 x 512
    std::vector<Bytes> expect;
    for (size_t i = 0; i < 40; ++i) {
        expect.emplace_back(pipe.begin() + static_cast<std::ptrdiff_t>(i * 173),
                            pipe.begin() + static_cast<std::ptrdiff_t>((i + 1) * 173));
    }
    // Chunks up to max_frame: what one read may bring when the buffer is at its fullest.
    for (const size_t chunk : {size_t{1}, size_t{7}, size_t{172}, size_t{174}, size_t{512}}) {
        StreamReader r(512);
        ASSERT_TRUE(r.cut_fixed(173));
        std::vector<size_t> chunks(pipe.size() / chunk, chunk);
        if (pipe.size() % chunk != 0) {
            chunks.push_back(pipe.size() % chunk);
        }
        StreamReadStatus last;
        EXPECT_TRUE(feed(r, pipe, chunks, last) == expect) << "chunks of " << chunk;
        EXPECT_EQ(last, StreamReadStatus::kNeedMore);
    }
}

TEST(LoadStreamReader, FixedCutSizeMustFitTheBuffer) {
    StreamReader r(512);
    EXPECT_FALSE(r.cut_fixed(0));
    EXPECT_FALSE(r.cut_fixed(513));
    // Unchanged: still TURN framing, so a raw record is a framing error.
    const Bytes b = raw_records(1, 64);
    StreamReadStatus last;
    feed(r, b, {b.size()}, last);
    EXPECT_EQ(last, StreamReadStatus::kBadType);
    StreamReader r2(512);
    EXPECT_TRUE(r2.cut_fixed(512));
}

// A listening TCP socket on 127.0.0.1, port chosen by the kernel.
int listener(uint16_t& port) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 4) != 0) {
        close(fd);
        return -1;
    }
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    return fd;
}

TEST(LoadStreamConn, ConnectRefusedIsReportedAsSuch) {
    uint16_t port = 0;
    const int l = listener(port);
    ASSERT_GE(l, 0);
    close(l);  // nothing listens there now
    StreamConn c;
    std::string err;
    ConnectError why = ConnectError::kNone;
    EXPECT_FALSE(c.connect(*Address::parse("127.0.0.1:" + std::to_string(port)), nullptr,
                           mono_ns() + kNsPerSec, err, why));
    EXPECT_EQ(why, ConnectError::kRefused);
    EXPECT_NE(err.find("Connection refused"), std::string::npos) << err;
    EXPECT_TRUE(c.broken());
}

TEST(LoadStreamConn, OutputQueueIsBoundedAndMessagesArriveWhole) {
    uint16_t port = 0;
    const int l = listener(port);
    ASSERT_GE(l, 0);
    StreamConn c(4096);
    std::string err;
    ConnectError why = ConnectError::kNone;
    ASSERT_TRUE(c.connect(*Address::parse("127.0.0.1:" + std::to_string(port)), nullptr, mono_ns() + kNsPerSec,
                          err, why))
        << err;
    const int s = accept(l, nullptr, nullptr);
    ASSERT_GE(s, 0);
    // The peer does not read: the kernel's buffers fill, then our 4 KiB queue;
    // a message that does not fit is refused whole.
    const Bytes m = channel_data_padded(0x4000, 1000, 5);
    size_t accepted = 0;
    for (int i = 0; i < 100000 && c.write({m.data(), m.size()}); ++i) {
        accepted++;
    }
    EXPECT_FALSE(c.broken());
    EXPECT_LT(c.out_space(), m.size());
    EXPECT_TRUE(c.want_write());
    // Read everything back on the other side: whole messages only.
    StreamReader r;
    size_t got = 0;
    while (got < accepted) {
        auto space = r.space();
        ASSERT_FALSE(space.empty());
        const ssize_t n = recv(s, space.data(), space.size(), MSG_DONTWAIT);
        if (n <= 0) {
            ASSERT_TRUE(c.flush());
            continue;
        }
        r.commit(static_cast<size_t>(n));
        std::span<const uint8_t> msg;
        StreamReadStatus st;
        while ((st = r.next(msg)) == StreamReadStatus::kMessage) {
            ASSERT_EQ(msg.size(), 1004u);
            got++;
        }
        ASSERT_EQ(st, StreamReadStatus::kNeedMore);
    }
    EXPECT_EQ(got, accepted);
    EXPECT_FALSE(c.want_write());
    // The peer closes: the next read says so and the connection is broken.
    close(s);
    IoStatus io = IoStatus::kAgain;
    for (int i = 0; i < 1000 && io == IoStatus::kAgain; ++i) {
        io = c.read_once();
    }
    EXPECT_EQ(io, IoStatus::kClosed);
    EXPECT_EQ(c.break_reason(), "stream_closed");
    close(l);
}

}  // namespace
}  // namespace turn::load
