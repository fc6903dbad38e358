// ChannelData framing (RFC 8656 section 12.4): 2-byte channel number
// (0x4000-0x4FFF), 2-byte length, application data. Over UDP the padding to a
// multiple of 4 is optional; over TCP/TLS it is mandatory and not counted in
// the length.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace turn {

constexpr size_t kChannelDataHeader = 4;

enum class ChannelDataError : uint8_t {
    kOk = 0,
    kTooShort,       // fewer than 4 bytes
    kNotChannelData, // first two bits are not 0b01
    kBadChannel,     // 0x5000-0x7FFF: reserved range
    kLengthOverrun,  // length field exceeds the bytes present
};
std::string_view to_string(ChannelDataError e);

struct ChannelDataView {
    uint16_t channel = 0;
    std::span<const uint8_t> payload;
};

// Which channel numbers count as valid. RFC 8656 section 12 allows
// 0x4000-0x4FFF and reserves 0x5000-0x7FFF; RFC 5766 allowed the whole
// 0x4000-0x7FFF, and clients written to it (coturn's turnutils_uclient among
// them) still bind numbers above 0x4FFF.
enum class ChannelRange : uint8_t { kRfc8656, kRfc5766 };
constexpr uint16_t kChannelMaxRfc8656 = 0x4FFF;
constexpr uint16_t kChannelMaxRfc5766 = 0x7FFF;

// True if the first byte marks ChannelData (0b01xxxxxx).
inline bool is_channel_data(uint8_t first_byte) { return (first_byte & 0xC0) == 0x40; }
inline bool is_valid_channel(uint16_t ch, ChannelRange r = ChannelRange::kRfc8656) {
    return ch >= 0x4000 && ch <= (r == ChannelRange::kRfc8656 ? kChannelMaxRfc8656 : kChannelMaxRfc5766);
}

// Parses a ChannelData message at the start of `data`. Over UDP extra bytes
// after length (padding) are allowed and ignored.
ChannelDataError parse_channel_data(std::span<const uint8_t> data, ChannelDataView& out,
                                    ChannelRange range = ChannelRange::kRfc8656);

// For stream transports: total frame size including padding to 4 if `data`
// holds at least the header; 0 otherwise.
size_t channel_data_frame_size(std::span<const uint8_t> data);

// Writes header + payload into `out`; pads with zeros to 4 when `pad`.
// Returns bytes written, 0 if `out` is too small or payload exceeds 65535.
size_t build_channel_data(std::span<uint8_t> out, uint16_t channel,
                          std::span<const uint8_t> payload, bool pad);

// Writes just the 4-byte header (for in-place framing in front of a payload).
void write_channel_data_header(uint8_t* out, uint16_t channel, uint16_t length);

}  // namespace turn
