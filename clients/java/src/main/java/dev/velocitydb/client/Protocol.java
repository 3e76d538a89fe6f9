package dev.velocitydb.client;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32;

/**
 * The Velocity wire protocol, version 1 (profile sections 1, 3 and 4), without any I/O:
 * {@code encode*} build client frames, {@code parse*} read server payloads, {@link FrameDecoder}
 * splits received bytes into frames. {@link Connection} is a thin shell around this class.
 */
public final class Protocol {
    private Protocol() {
    }

    static final byte[] MAGIC = {'V', 'E', 'L', 'O'};
    public static final int VERSION = 1;
    public static final int HEADER_BYTES = 10;
    public static final int FRAME_OVERHEAD_BYTES = 14;

    /** Largest payload accepted before authentication (profile section 1). */
    public static final int PREAUTH_PAYLOAD_BYTES_MAX = 4096;
    /**
     * The largest {@code max_payload} a server may announce; a larger one is a protocol error, so a
     * hostile server cannot make the client buffer without bound.
     */
    public static final long PAYLOAD_BYTES_CEILING = 64L << 20;
    public static final int PING_PAYLOAD_BYTES_MAX = 64;
    public static final int USERNAME_BYTES_MAX = 64;
    public static final int PASSWORD_BYTES_MAX = 128;
    public static final int CREDENTIAL_BYTES_MAX = 128;
    /** Bounds on the Argon2id cost a server may ask of the client (as the other clients). */
    public static final long ARGON2_M_KIB_MAX = 1L << 20;
    public static final long ARGON2_T_MAX = 16;
    public static final int ARGON2_P_MAX = 16;

    public static final int HELLO = 0x01;
    public static final int SERVER_INFO = 0x02;
    public static final int AUTH_REQUEST = 0x03;
    public static final int AUTH_RESPONSE = 0x04;
    public static final int DISCONNECT = 0x05;
    public static final int COMMAND = 0x10;
    public static final int RESPONSE = 0x11;
    public static final int ERROR = 0x12;
    public static final int PING = 0x20;
    public static final int PONG = 0x21;
    public static final int STATS = 0x22;

    public static final int METHOD_PASSWORD = 1;
    public static final int METHOD_API_KEY = 2;

    public static final int FLAG_TLS = 0x01;
    public static final int FLAG_AUTH_REQUIRED = 0x02;

    static boolean knownType(int t) {
        switch (t) {
            case HELLO: case SERVER_INFO: case AUTH_REQUEST: case AUTH_RESPONSE: case DISCONNECT:
            case COMMAND: case RESPONSE: case ERROR: case PING: case PONG: case STATS:
                return true;
            default:
                return false;
        }
    }

    /** A frame: magic, version, type, u32 LE length, payload, CRC-32 of all before it. */
    public static byte[] encodeFrame(int type, byte[] payload) {
        byte[] out = new byte[FRAME_OVERHEAD_BYTES + payload.length];
        ByteBuffer b = ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN);
        b.put(MAGIC).put((byte) VERSION).put((byte) type).putInt(payload.length).put(payload);
        CRC32 crc = new CRC32();
        crc.update(out, 0, HEADER_BYTES + payload.length);
        b.putInt((int) crc.getValue());
        return out;
    }

    private static byte[] str8(String s, String what) {
        byte[] b = Utf8.encode(s, what);
        if (b.length > 255) {
            throw new ProtocolErrorException(what + " is longer than 255 bytes");
        }
        byte[] out = new byte[1 + b.length];
        out[0] = (byte) b.length;
        System.arraycopy(b, 0, out, 1, b.length);
        return out;
    }

    /** {@code str16}; text beyond 65,535 bytes is cut at a character boundary. */
    private static byte[] str16(String s) {
        byte[] b = Utf8.encode(s, "text");
        int n = b.length;
        if (n > 65535) {
            n = 65535;
            while (n > 0 && (b[n] & 0xC0) == 0x80) {
                n--; // do not split a UTF-8 sequence
            }
        }
        byte[] out = new byte[2 + n];
        out[0] = (byte) n;
        out[1] = (byte) (n >>> 8);
        System.arraycopy(b, 0, out, 2, n);
        return out;
    }

    public static byte[] encodeHello(String clientName) {
        return encodeHello(clientName, new int[] {VERSION});
    }

    public static byte[] encodeHello(String clientName, int[] versions) {
        ByteArrayOutputStream p = new ByteArrayOutputStream();
        p.write(versions.length);
        for (int v : versions) {
            p.write(v);
        }
        p.writeBytes(str8(clientName, "client name"));
        return encodeFrame(HELLO, p.toByteArray());
    }

    public static byte[] encodeAuthRequest(int method, String username, byte[] credential) {
        if (credential.length > 255) {
            throw new ProtocolErrorException("credential is longer than 255 bytes");
        }
        ByteArrayOutputStream p = new ByteArrayOutputStream();
        p.write(method);
        p.writeBytes(str8(username, "user name"));
        p.write(credential.length);
        p.writeBytes(credential);
        return encodeFrame(AUTH_REQUEST, p.toByteArray());
    }

    public static byte[] encodeCommand(String sql) {
        return encodeFrame(COMMAND, Utf8.encode(sql, "statement"));
    }

    public static byte[] encodePing(byte[] data) {
        return encodeFrame(PING, data);
    }

    public static byte[] encodeStats() {
        return encodeFrame(STATS, new byte[0]);
    }

    public static byte[] encodeDisconnect(int code, String reason) {
        byte[] r = str16(reason);
        byte[] p = new byte[2 + r.length];
        p[0] = (byte) code;
        p[1] = (byte) (code >>> 8);
        System.arraycopy(r, 0, p, 2, r.length);
        return encodeFrame(DISCONNECT, p);
    }

    /** The payload layout of ERROR, AUTH_RESPONSE and DISCONNECT: {@code u16 code; str16 text}. */
    public record CodeMessage(int code, String message) {
    }

    public static CodeMessage parseCodeMessage(byte[] payload) {
        Reader r = new Reader(payload);
        int code = r.u16();
        String text = r.str16();
        r.end();
        return new CodeMessage(code, text);
    }

    public static ServerInfo parseServerInfo(byte[] payload) {
        Reader r = new Reader(payload);
        int version = r.u8();
        String server = r.str8();
        byte[] fingerprint = r.take(32);
        byte[] salt = r.take(16);
        long m = r.u32();
        long t = r.u32();
        int p = r.u8();
        long maxPayload = r.u32();
        int shards = r.u16();
        int flags = r.u8();
        r.end();
        return new ServerInfo(version, server, fingerprint, salt, m, t, p, maxPayload, shards, flags);
    }

    /** A RESPONSE or STATS payload: columns, rows of NULL / BYTES / INT values, affected. */
    public static Result parseResult(byte[] payload) {
        Reader r = new Reader(payload);
        int nCols = r.u16();
        List<String> columns = new ArrayList<>(nCols);
        for (int i = 0; i < nCols; i++) {
            columns.add(r.str16());
        }
        long nRows = r.u32();
        // Each value takes at least one byte: a count beyond the payload is malformed, caught
        // before any allocation proportional to it.
        if (nCols == 0 && nRows != 0 || nRows * nCols > payload.length) {
            throw new FrameException("malformed", "result set claims more values than its payload holds", false);
        }
        List<Row> rows = new ArrayList<>((int) nRows);
        for (long i = 0; i < nRows; i++) {
            Object[] row = new Object[nCols];
            for (int c = 0; c < nCols; c++) {
                int tag = r.u8();
                if (tag == 0) {
                    row[c] = null;
                } else if (tag == 1) {
                    long n = r.u32();
                    row[c] = r.take(n);
                } else if (tag == 2) {
                    row[c] = r.i64();
                } else {
                    throw new FrameException("malformed", "unknown value tag " + tag, false);
                }
            }
            rows.add(new Row(columns, row));
        }
        long affected = r.u64();
        r.end();
        return new Result(columns, rows, affected);
    }

    /** Reads primitive fields from a payload; any overrun is a malformed payload. */
    static final class Reader {
        private final byte[] data;
        private int pos;

        Reader(byte[] data) {
            this.data = data;
        }

        byte[] take(long n) {
            if (n > data.length - pos) {
                throw new FrameException("malformed", "payload is shorter than its fields", false);
            }
            byte[] out = new byte[(int) n];
            System.arraycopy(data, pos, out, 0, (int) n);
            pos += (int) n;
            return out;
        }

        private long le(int n) {
            if (n > data.length - pos) {
                throw new FrameException("malformed", "payload is shorter than its fields", false);
            }
            long v = 0;
            for (int i = n - 1; i >= 0; i--) {
                v = (v << 8) | (data[pos + i] & 0xFF);
            }
            pos += n;
            return v;
        }

        int u8() {
            return (int) le(1);
        }

        int u16() {
            return (int) le(2);
        }

        long u32() {
            return le(4);
        }

        /** An unsigned 64-bit value in a long (two's complement beyond 2^63 - 1). */
        long u64() {
            return le(8);
        }

        long i64() {
            return le(8);
        }

        String text(long n) {
            byte[] b = take(n);
            String s = Utf8.decodeStrict(b);
            if (s == null) {
                throw new FrameException("malformed", "text field is not UTF-8", false);
            }
            return s;
        }

        String str8() {
            return text(u8());
        }

        String str16() {
            return text(u16());
        }

        void end() {
            if (pos != data.length) {
                throw new FrameException("malformed", (data.length - pos) + " bytes after the last field", false);
            }
        }
    }
}
