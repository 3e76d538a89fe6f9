package dev.velocitydb.client;

import java.math.BigInteger;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;

/**
 * SQL literals that can never change the shape of the statement they are placed in, and
 * {@code ?} parameters, quoted exactly as the Python and Node.js clients quote them.
 */
public final class Sql {
    private Sql() {
    }

    /**
     * A literal for {@code value} that parses back to exactly that value: text is quoted with
     * {@code '} doubled; bytes that are not printable UTF-8 (control characters, for one) become
     * {@code X'…'}; non-negative integers are written in decimal; {@code null} is {@code NULL}.
     *
     * @param value a {@code String}, {@code byte[]}, {@code Long}, {@code Integer},
     *     {@code Short}, {@code Byte}, {@code BigInteger} or {@code null}
     * @throws UsageException for any other type, a negative number, or a string with an unpaired
     *     surrogate
     */
    public static String quote(Object value) {
        if (value == null) {
            return "NULL";
        }
        if (value instanceof Boolean) {
            throw new UsageException("cannot quote a boolean; pass a number, a String or a byte[]");
        }
        if (value instanceof Long || value instanceof Integer || value instanceof Short || value instanceof Byte) {
            long n = ((Number) value).longValue();
            if (n < 0) {
                throw new UsageException("the dialect has unsigned integer literals only");
            }
            return Long.toString(n);
        }
        if (value instanceof BigInteger n) {
            if (n.signum() < 0) {
                throw new UsageException("the dialect has unsigned integer literals only");
            }
            return n.toString();
        }
        if (value instanceof String s) {
            byte[] b = Utf8.encode(s, "parameter");
            return printable(s) ? quoted(s) : hex(b);
        }
        if (value instanceof byte[] b) {
            String s = Utf8.decodeStrict(b);
            return s != null && printable(s) ? quoted(s) : hex(b);
        }
        throw new UsageException("cannot quote a " + value.getClass().getName()
                + "; pass a String, a byte[], a non-negative integer or null");
    }

    /** Replaces each {@code ?} outside a quoted literal with {@link #quote quote(param)}. */
    public static String bind(String sql, List<?> params) {
        StringBuilder out = new StringBuilder(sql.length() + 16 * params.size());
        int used = 0;
        boolean inQuote = false;
        for (int i = 0; i < sql.length(); i++) {
            char ch = sql.charAt(i);
            if (ch == '\'') {
                inQuote = !inQuote;
                out.append(ch);
            } else if (ch == '?' && !inQuote) {
                if (used >= params.size()) {
                    throw new UsageException("more ? placeholders than parameters");
                }
                out.append(quote(params.get(used++)));
            } else {
                out.append(ch);
            }
        }
        if (used != params.size()) {
            throw new UsageException(params.size() + " parameters for " + used + " ? placeholders");
        }
        return out.toString();
    }

    public static String bind(String sql, Object... params) {
        return bind(sql, Arrays.asList(params));
    }

    private static String quoted(String s) {
        return "'" + s.replace("'", "''") + "'";
    }

    private static String hex(byte[] b) {
        return "X'" + HexFormat.of().formatHex(b) + "'";
    }

    /**
     * Printable as Python's {@code str.isprintable()} defines it: no character of the Unicode
     * categories Other (Cc, Cf, Cs, Co, Cn) or Separator (Zl, Zp, Zs), the ASCII space excepted.
     */
    static boolean printable(String s) {
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == ' ') {
                continue;
            }
            switch (Character.getType(cp)) {
                case Character.CONTROL:
                case Character.FORMAT:
                case Character.SURROGATE:
                case Character.PRIVATE_USE:
                case Character.UNASSIGNED:
                case Character.LINE_SEPARATOR:
                case Character.PARAGRAPH_SEPARATOR:
                case Character.SPACE_SEPARATOR:
                    return false;
                default:
                    break;
            }
        }
        return true;
    }
}
