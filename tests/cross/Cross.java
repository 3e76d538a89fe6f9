/*
 * The Java client's runner for the cross-client check (tests/cross/run.py).
 *
 *   java -cp target/cross/java:clients/java/target/classes:/usr/share/java/bcprov.jar Cross write SPEC PREFIX
 *   java -cp ... Cross read
 *
 * write inserts each SPEC line's key (PREFIX + key) and value; read prints every x:% key in the
 * canonical form. The server and login come from CROSS_HOST, CROSS_PORT, CROSS_USER,
 * VELOCITY_PASSWORD, CROSS_TLS (1/0), CROSS_KNOWN_HOSTS, CROSS_ACCEPT_NEW (1/0); the TTL range a
 * reader accepts from CROSS_TTL_MIN and CROSS_TTL_MAX. Every key and value goes through the
 * client's own `?` binding: text entries of SPEC as String, bytes entries as byte[].
 */

import dev.velocitydb.client.Connection;
import dev.velocitydb.client.Options;
import dev.velocitydb.client.Result;
import dev.velocitydb.client.Row;
import dev.velocitydb.client.Velocity;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;

public class Cross {
    private static String env(String name) {
        String v = System.getenv(name);
        if (v == null) {
            throw new IllegalStateException(name + " is not set");
        }
        return v;
    }

    private static Connection connect() {
        return Velocity.connect(new Options()
                .host(env("CROSS_HOST"))
                .port(Integer.parseInt(env("CROSS_PORT")))
                .user(env("CROSS_USER"))
                .password(env("VELOCITY_PASSWORD"))
                .tls(env("CROSS_TLS").equals("1"))
                .knownHosts(Path.of(env("CROSS_KNOWN_HOSTS")))
                .acceptNewHost(env("CROSS_ACCEPT_NEW").equals("1")));
    }

    /** A text entry as a String (strictly decoded), a bytes entry as a byte[]. */
    private static Object decode(String kind, String hex) throws CharacterCodingException {
        byte[] b = HexFormat.of().parseHex(hex);
        if (!kind.equals("text")) {
            return b;
        }
        return StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(b))
                .toString();
    }

    private static void write(String spec, String prefix) throws IOException {
        List<String> lines = Files.readAllLines(Path.of(spec), StandardCharsets.UTF_8);
        try (Connection db = connect()) {
            for (String line : lines) {
                if (line.isEmpty()) {
                    continue;
                }
                String[] f = line.split(" ", -1);
                if (f.length != 5) {
                    throw new IllegalArgumentException("bad spec line " + line);
                }
                Object key = decode(f[0], f[1]);
                Object value = decode(f[2], f[3]);
                if (key instanceof String s) {
                    key = prefix + s;
                } else {
                    byte[] p = prefix.getBytes(StandardCharsets.UTF_8);
                    byte[] k = (byte[]) key;
                    byte[] both = Arrays.copyOf(p, p.length + k.length);
                    System.arraycopy(k, 0, both, p.length, k.length);
                    key = both;
                }
                Result r = f[4].equals("-")
                        ? db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", key, value)
                        : db.execute("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", key, value, Long.parseLong(f[4]));
                if (r.affected() != 1) {
                    throw new IllegalStateException("INSERT of " + line + " affected " + r.affected() + " rows");
                }
            }
        }
    }

    private static String token(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Long n) {
            return "i:" + n;
        }
        if (v instanceof byte[] b) {
            return "b:" + HexFormat.of().formatHex(b);
        }
        return "?" + v.getClass().getName();
    }

    private static long ttlMin;
    private static long ttlMax;

    private static String ttlToken(Object v) {
        if (v == null) {
            return "-";
        }
        if (v instanceof Long n) {
            return ttlMin <= n && n <= ttlMax ? "ttl" : "ttl!" + n;
        }
        return token(v);
    }

    private static String line(Row r) {
        if (r.size() != 3) {
            return "?" + r.size() + " columns";
        }
        return token(r.get(0)) + " " + token(r.get(1)) + " " + ttlToken(r.get(2));
    }

    private static List<Row> sorted(Result r) {
        List<Row> rows = new ArrayList<>(r.rows());
        rows.sort((a, b) -> Arrays.compareUnsigned(a.getBytes(0), b.getBytes(0)));
        return rows;
    }

    private static void read() throws IOException {
        ttlMin = Long.parseLong(env("CROSS_TTL_MIN"));
        ttlMax = Long.parseLong(env("CROSS_TTL_MAX"));
        BufferedWriter out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8), 1 << 20);
        try (Connection db = connect()) {
            Object count = db.execute("SELECT COUNT(*) FROM kv WHERE key LIKE ?", "x:%").scalar();
            out.write(count instanceof Long n ? "count " + n + "\n" : "count " + token(count) + "\n");
            List<Row> scan = sorted(db.execute("SELECT key, value, ttl FROM kv WHERE key LIKE ?", "x:%"));
            List<Object> keys = new ArrayList<>();
            for (Row r : scan) {
                out.write("scan " + line(r) + "\n");
                keys.add(r.getBytes(0));
            }
            for (Object k : keys) {
                Result r = db.execute("SELECT key, value, ttl FROM kv WHERE key = ?", k);
                if (r.size() != 1) {
                    throw new IllegalStateException("point read of " + token(k) + ": " + r.size() + " rows");
                }
                out.write("point " + line(r.row(0)) + "\n");
            }
            String marks = String.join(", ", java.util.Collections.nCopies(keys.size(), "?"));
            for (Row r : sorted(db.execute("SELECT key, value, ttl FROM kv WHERE key IN (" + marks + ")", keys))) {
                out.write("in " + line(r) + "\n");
            }
        }
        out.flush();
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 3 && args[0].equals("write")) {
            write(args[1], args[2]);
        } else if (args.length == 1 && args[0].equals("read")) {
            read();
        } else {
            System.err.println("usage: Cross write SPEC PREFIX | Cross read");
            System.exit(2);
        }
    }
}
