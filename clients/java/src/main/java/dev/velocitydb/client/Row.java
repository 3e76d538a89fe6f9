package dev.velocitydb.client;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * One row of a result set. Each value is a {@code byte[]} (BYTES), a {@link Long} (INT) or
 * {@code null} (NULL). Keys and values are byte strings; {@link #getText} decodes them as UTF-8.
 */
public final class Row {
    private final List<String> columns;
    private final Object[] values;

    Row(List<String> columns, Object[] values) {
        this.columns = columns;
        this.values = values;
    }

    /** A row of these values (byte[], Long or null), for building expected rows in tests. */
    public static Row of(Object... values) {
        Object[] v = new Object[values.length];
        List<String> cols = new ArrayList<>();
        for (int i = 0; i < values.length; i++) {
            Object x = values[i];
            if (x instanceof String s) {
                x = s.getBytes(StandardCharsets.UTF_8);
            } else if (x instanceof Integer n) {
                x = (long) n;
            } else if (x != null && !(x instanceof byte[]) && !(x instanceof Long)) {
                throw new IllegalArgumentException("a value is byte[], String, Long, Integer or null");
            }
            v[i] = x instanceof byte[] b ? b.clone() : x;
            cols.add("column" + i);
        }
        return new Row(Collections.unmodifiableList(cols), v);
    }

    public int size() {
        return values.length;
    }

    public List<String> columns() {
        return columns;
    }

    /** The raw value: {@code byte[]}, {@link Long} or {@code null}. */
    public Object get(int i) {
        Object v = values[i];
        return v instanceof byte[] b ? b.clone() : v;
    }

    public Object get(String column) {
        return get(index(column));
    }

    public boolean isNull(int i) {
        return values[i] == null;
    }

    /** A BYTES value, or {@code null} for NULL; an INT value is refused. */
    public byte[] getBytes(int i) {
        Object v = values[i];
        if (v == null) {
            return null;
        }
        if (v instanceof byte[] b) {
            return b.clone();
        }
        throw new IllegalStateException("column " + columns.get(i) + " holds an INT, not BYTES");
    }

    public byte[] getBytes(String column) {
        return getBytes(index(column));
    }

    /**
     * A BYTES value decoded as UTF-8 (bytes that are not UTF-8 become U+FFFD; use
     * {@link #getBytes} for binary data), an INT in decimal, or {@code null} for NULL.
     */
    public String getText(int i) {
        Object v = values[i];
        if (v == null) {
            return null;
        }
        if (v instanceof byte[] b) {
            return new String(b, StandardCharsets.UTF_8);
        }
        return v.toString();
    }

    public String getText(String column) {
        return getText(index(column));
    }

    /** An INT value, or {@code null} for NULL; a BYTES value is refused. */
    public Long getLong(int i) {
        Object v = values[i];
        if (v == null || v instanceof Long) {
            return (Long) v;
        }
        throw new IllegalStateException("column " + columns.get(i) + " holds BYTES, not an INT");
    }

    public Long getLong(String column) {
        return getLong(index(column));
    }

    /** The values with BYTES decoded as UTF-8: String, Long or null each. */
    public List<Object> text() {
        List<Object> out = new ArrayList<>(values.length);
        for (Object v : values) {
            out.add(v instanceof byte[] b ? new String(b, StandardCharsets.UTF_8) : v);
        }
        return out;
    }

    private int index(String column) {
        for (int i = 0; i < columns.size(); i++) {
            if (columns.get(i).equalsIgnoreCase(column)) {
                return i;
            }
        }
        throw new IllegalArgumentException("no column " + column + " in " + columns);
    }

    /** Rows are equal when their values are (bytes compared by content); column names aside. */
    @Override
    public boolean equals(Object o) {
        return o instanceof Row r && Arrays.deepEquals(values, r.values);
    }

    @Override
    public int hashCode() {
        return Arrays.deepHashCode(values);
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("(");
        for (int i = 0; i < values.length; i++) {
            if (i > 0) {
                sb.append(", ");
            }
            Object v = values[i];
            if (v instanceof byte[] b) {
                sb.append(Sql.quote(b));
            } else {
                sb.append(v == null ? "NULL" : v.toString());
            }
        }
        return sb.append(")").toString();
    }
}
