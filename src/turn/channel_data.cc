#include "turn/channel_data.h"

#include <cstring>

#include "common/bytes.h"

namespace turn {

std::string_view to_string(ChannelDataError e) {
    switch (e) {
    case ChannelDataError::kOk: return "ok";
    case ChannelDataError::kTooShort: return "shorter than a ChannelData header";
    case ChannelDataError::kNotChannelData: return "not ChannelData";
    case ChannelDataError::kBadChannel: return "channel number outside 0x4000-0x4FFF";
    case ChannelDataError::kLengthOverrun: return "length runs past the data";
    }
    return "unknown";
}

ChannelDataError parse_channel_data(std::span<const uint8_t> data, ChannelDataView& out,
                                    ChannelRange range) {
    if (data.size() < kChannelDataHeader) {
        return ChannelDataError::kTooShort;
    }
    if (!is_channel_data(data[0])) {
        return ChannelDataError::kNotChannelData;
    }
    const uint16_t channel = load_be16(data.data());
    // RFC 8656 12: 0x5000-0x7FFF are reserved unless the caller accepts
    // RFC 5766's range.
    if (!is_valid_channel(channel, range)) {
        return ChannelDataError::kBadChannel;
    }
    const uint16_t len = load_be16(data.data() + 2);
    if (len > data.size() - kChannelDataHeader) {
        return ChannelDataError::kLengthOverrun;
    }
    out.channel = channel;
    out.payload = data.subspan(kChannelDataHeader, len);
    return ChannelDataError::kOk;
}

size_t channel_data_frame_size(std::span<const uint8_t> data) {
    if (data.size() < kChannelDataHeader) {
        return 0;
    }
    return kChannelDataHeader + pad4(load_be16(data.data() + 2));
}

void write_channel_data_header(uint8_t* out, uint16_t channel, uint16_t length) {
    store_be16(out, channel);
    store_be16(out + 2, length);
}

size_t build_channel_data(std::span<uint8_t> out, uint16_t channel,
                          std::span<const uint8_t> payload, bool pad) {
    if (payload.size() > 0xFFFF) {
        return 0;
    }
    const size_t body = pad ? pad4(static_cast<uint32_t>(payload.size())) : payload.size();
    const size_t total = kChannelDataHeader + body;
    if (total > out.size()) {
        return 0;
    }
    // Payload first: it may overlap `out` (framing a datagram in place), and
    // the header would overwrite its first bytes.
    if (!payload.empty()) {
        std::memmove(out.data() + kChannelDataHeader, payload.data(), payload.size());
    }
    write_channel_data_header(out.data(), channel, static_cast<uint16_t>(payload.size()));
    std::memset(out.data() + kChannelDataHeader + payload.size(), 0, body - payload.size());
    return total;
}

}  // namespace turn
