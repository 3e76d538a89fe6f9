package dev.velocitydb.client;

import java.util.zip.CRC32;

/**
 * Accumulates received bytes and hands out whole frames. {@link #next()} returns {@code null} for
 * an incomplete frame (never an error); a violation throws {@link FrameException}. The payload
 * limit is checked from the header alone, before any payload is buffered, and a wrong magic is
 * reported as soon as its first wrong byte arrives.
 */
public final class FrameDecoder {
    private long payloadBytesMax;
    private byte[] buf = new byte[16 * 1024];
    private int start;
    private int end;

    public FrameDecoder() {
        this(Protocol.PREAUTH_PAYLOAD_BYTES_MAX);
    }

    public FrameDecoder(long payloadBytesMax) {
        this.payloadBytesMax = payloadBytesMax;
    }

    public long payloadBytesMax() {
        return payloadBytesMax;
    }

    public void setPayloadBytesMax(long max) {
        this.payloadBytesMax = max;
    }

    public void feed(byte[] data) {
        feed(data, 0, data.length);
    }

    public void feed(byte[] data, int off, int len) {
        if (start == end) {
            start = 0;
            end = 0;
        }
        if (buf.length - end < len) {
            int live = end - start;
            if (live + len <= buf.length && start > 0) {
                System.arraycopy(buf, start, buf, 0, live);
            } else {
                byte[] bigger = new byte[Math.max(buf.length * 2, live + len)];
                System.arraycopy(buf, start, bigger, 0, live);
                buf = bigger;
            }
            start = 0;
            end = live;
        }
        System.arraycopy(data, off, buf, end, len);
        end += len;
    }

    /** Bytes received and not yet handed out as frames. */
    public int buffered() {
        return end - start;
    }

    /** The next whole frame, or {@code null} when more bytes are needed. */
    public Frame next() {
        int avail = end - start;
        int seen = Math.min(avail, 4);
        for (int i = 0; i < seen; i++) {
            if (buf[start + i] != Protocol.MAGIC[i]) {
                throw new FrameException("bad_magic", "bad magic: not a Velocity server (is it TLS on one side only?)", true);
            }
        }
        if (avail < Protocol.HEADER_BYTES) {
            return null;
        }
        int version = buf[start + 4] & 0xFF;
        if (version != Protocol.VERSION) {
            throw new FrameException("bad_version", "unsupported protocol version " + version, true);
        }
        int type = buf[start + 5] & 0xFF;
        long length = u32(start + 6);
        if (length > payloadBytesMax) {
            throw new FrameException("too_long", "frame of " + length + " bytes exceeds the limit of " + payloadBytesMax, true);
        }
        long total = Protocol.FRAME_OVERHEAD_BYTES + length;
        if (avail < total) {
            return null;
        }
        int bodyEnd = start + Protocol.HEADER_BYTES + (int) length;
        CRC32 crc = new CRC32();
        crc.update(buf, start, Protocol.HEADER_BYTES + (int) length);
        if (crc.getValue() != u32(bodyEnd)) {
            throw new FrameException("bad_checksum", "frame checksum mismatch", true);
        }
        byte[] payload = new byte[(int) length];
        System.arraycopy(buf, start + Protocol.HEADER_BYTES, payload, 0, (int) length);
        start += (int) total;
        if (!Protocol.knownType(type)) {
            throw new FrameException("unknown_type", String.format("unknown frame type 0x%02x", type), false);
        }
        return new Frame(type, payload);
    }

    private long u32(int at) {
        return (buf[at] & 0xFFL) | (buf[at + 1] & 0xFFL) << 8 | (buf[at + 2] & 0xFFL) << 16 | (buf[at + 3] & 0xFFL) << 24;
    }
}
