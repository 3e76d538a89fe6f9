package dev.velocitydb.client;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * The statements behind {@link Connection#insertIfAbsent}, {@link Connection#cas} and {@link
 * Connection#incr} (docs/protocol.md, "Conditional writes and counters"), each one statement
 * with {@code ?} parameters, so that data goes through {@link Sql#quote} and nothing else.
 */
final class Conditional {
    /** The longest expiry the server accepts: 3,153,600,000 s (100 years). */
    static final long MAX_TTL_SECONDS = 3_153_600_000L;

    static final String INSERT_IF_ABSENT = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING";
    static final String INSERT_IF_ABSENT_TTL = "INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?) ON CONFLICT DO NOTHING";
    static final String CAS = "UPDATE kv SET value = ? WHERE key = ? AND value = ?";
    static final String INCR = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + ? RETURNING value";
    static final String DECR = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value - ? RETURNING value";

    private Conditional() {
    }

    /** A statement and the parameters its {@code ?} placeholders take. */
    record Statement(String sql, List<Object> params) {
    }

    static Statement insertIfAbsent(Object key, Object value) {
        requireBytes("key", key);
        requireBytes("value", value);
        return new Statement(INSERT_IF_ABSENT, List.of(key, value));
    }

    static Statement insertIfAbsent(Object key, Object value, long ttlSeconds) {
        requireBytes("key", key);
        requireBytes("value", value);
        if (ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
            throw new UsageException("a TTL is from 1 to " + MAX_TTL_SECONDS + " seconds (got " + ttlSeconds + ")");
        }
        return new Statement(INSERT_IF_ABSENT_TTL, List.of(key, value, ttlSeconds));
    }

    static Statement cas(Object key, Object expected, Object newValue) {
        requireBytes("key", key);
        requireBytes("expected value", expected);
        requireBytes("new value", newValue);
        return new Statement(CAS, List.of(newValue, key, expected));
    }

    /**
     * The absent key's row is {@code by} in decimal; the dialect's integers are unsigned, so a
     * negative {@code by} is {@code value - |by|} (|Long.MIN_VALUE| = 2^63, as a BigInteger).
     */
    static Statement incr(Object key, long by) {
        requireBytes("key", key);
        String start = Long.toString(by);
        if (by < 0) {
            return new Statement(DECR, List.of(key, start, BigInteger.valueOf(by).negate()));
        }
        return new Statement(INCR, List.of(key, start, by));
    }

    /** The counter's new value, from its {@code RETURNING value}. */
    static long counterValue(Result r) {
        if (r.size() != 1 || r.columns().size() != 1 || !(r.row(0).get(0) instanceof byte[] b)) {
            throw new ProtocolErrorException("a counter's RETURNING value should be one BYTES value; got " + r.size()
                    + " rows of " + r.columns().size() + " columns");
        }
        String text = new String(b, StandardCharsets.UTF_8);
        try {
            return Long.parseLong(text);
        } catch (NumberFormatException e) {
            throw new ProtocolErrorException("a counter's RETURNING value is not a 64-bit integer: " + text);
        }
    }

    /**
     * Keys and values are byte strings: a {@code String} or a {@code byte[]}. {@link Sql#quote}
     * would also write a number or NULL, which the server refuses in these places.
     */
    private static void requireBytes(String what, Object v) {
        if (!(v instanceof String) && !(v instanceof byte[])) {
            throw new UsageException("the " + what + " must be a String or a byte[] (got "
                    + (v == null ? "null" : v.getClass().getName()) + ")");
        }
    }
}
