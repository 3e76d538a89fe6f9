package dev.velocitydb.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** insertIfAbsent, cas and incr against the real velocityd. */
class ConditionalTest {
    @TempDir
    Path tmp;

    private final List<TestServer> servers = new ArrayList<>();

    @AfterEach
    void stopServers() {
        for (TestServer s : servers) {
            s.stop();
        }
    }

    private TestServer server(String... extra) throws IOException {
        TestServer s = TestServer.start(tmp, 2, extra);
        servers.add(s);
        return s;
    }

    private TestServer serverFor(String mode) throws IOException {
        return mode.equals("tls") ? server() : server("--plaintext");
    }

    private static String value(Connection db, String key) {
        return db.execute("SELECT value FROM kv WHERE key = ?", key).scalarText();
    }

    private static Long ttl(Connection db, String key) {
        return db.execute("SELECT ttl FROM kv WHERE key = ?", key).scalarLong();
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"tls", "plaintext"})
    void insertIfAbsent(String mode) throws Exception {
        try (Connection db = serverFor(mode).alice()) {
            assertTrue(db.insertIfAbsent("lock", "worker-7"));
            assertFalse(db.insertIfAbsent("lock", "worker-8"));
            assertFalse(db.insertIfAbsent("lock", "worker-8", 30));
            assertEquals("worker-7", value(db, "lock"));
            assertNull(ttl(db, "lock"), "a live key keeps its (absent) expiry");

            assertTrue(db.insertIfAbsent("lease", new byte[] {0, 1, 2}, 30));
            long t = ttl(db, "lease");
            assertTrue(t >= 29 && t <= 30, "ttl " + t);
            assertFalse(db.insertIfAbsent("lease", "other"));
            assertArrayEquals(new byte[] {0, 1, 2}, db.execute("SELECT value FROM kv WHERE key = 'lease'").scalarBytes());
            assertTrue(ttl(db, "lease") >= 29);

            // An expired key counts as absent.
            assertTrue(db.insertIfAbsent("brief", "a", 1));
            TestServer.sleep(1100);
            assertTrue(db.insertIfAbsent("brief", "b"));
            assertEquals("b", value(db, "brief"));

            // Data is quoted: it cannot change the statement.
            String evil = "x'); DELETE FROM kv WHERE key >= ''; --\n\0";
            assertTrue(db.insertIfAbsent(evil, evil));
            assertEquals(evil, value(db, evil));
            assertEquals(4L, db.execute("SELECT COUNT(*) FROM kv").scalarLong());

            // What cannot be sent is refused before sending.
            for (long bad : new long[] {0, -1, Conditional.MAX_TTL_SECONDS + 1}) {
                assertThrows(UsageException.class, () -> db.insertIfAbsent("k", "v", bad), "ttl " + bad);
            }
            assertThrows(UsageException.class, () -> db.insertIfAbsent(7L, "v"));
            assertThrows(UsageException.class, () -> db.insertIfAbsent("k", null));
            assertTrue(db.insertIfAbsent("max", "v", Conditional.MAX_TTL_SECONDS));
        }
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"tls", "plaintext"})
    void compareAndSet(String mode) throws Exception {
        try (Connection db = serverFor(mode).alice()) {
            // A missing key: false, and nothing is created.
            assertFalse(db.cas("k", "old", "new"));
            assertThrows(KeyNotFoundException.class, () -> value(db, "k"));

            db.execute("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "k", "old", 100);
            assertFalse(db.cas("k", "stale", "new"));
            assertEquals("old", value(db, "k"));
            assertTrue(db.cas("k", "old", "new"));
            assertEquals("new", value(db, "k"));
            long t = ttl(db, "k");
            assertTrue(t >= 99 && t <= 100, "the TTL is kept: " + t);

            // The compare is on exact bytes: binary values, and a prefix is not a match.
            byte[] bin = {(byte) 0xff, 0, '\'', '\n'};
            assertTrue(db.cas("k", "new", bin));
            assertFalse(db.cas("k", new byte[] {(byte) 0xff, 0, '\''}, "x"));
            assertTrue(db.cas("k", bin, "x"));
            assertEquals("x", value(db, "k"));
            assertThrows(UsageException.class, () -> db.cas("k", 1L, "2"));
        }
    }

    @Test
    void counters() throws Exception {
        try (Connection db = server().alice()) {
            assertEquals(5, db.incr("hits", 5), "from absent");
            assertEquals(6, db.incr("hits", 1));
            assertEquals(7, db.incr("hits", 1));
            assertEquals(-3, db.incr("hits", -10), "negative");
            assertEquals(-3, db.incr("hits", 0));
            assertEquals("-3", value(db, "hits"));
            assertEquals(-4, db.incr("down", -4), "negative from absent");
            assertEquals(0, db.incr("zero", 0));

            // The ends of long, and overflow past them: an error, and the value is unchanged.
            assertEquals(Long.MAX_VALUE, db.incr("max", Long.MAX_VALUE));
            InvalidCommandException over = assertThrows(InvalidCommandException.class, () -> db.incr("max", 1));
            assertEquals(ErrorCode.INVALID_COMMAND, over.errorCode());
            assertEquals(Long.toString(Long.MAX_VALUE), value(db, "max"));
            assertEquals(Long.MIN_VALUE, db.incr("min", Long.MIN_VALUE));
            assertThrows(InvalidCommandException.class, () -> db.incr("min", -1));
            assertEquals("-9223372036854775808", value(db, "min"));
            assertEquals(-1, db.incr("min", Long.MAX_VALUE));
            assertEquals(0, db.incr("min", 1));
            assertEquals(Long.MIN_VALUE, db.incr("min", Long.MIN_VALUE), "value - 2^63 on a present key");
            db.execute("INSERT INTO kv (key, value) VALUES ('one', '1')");
            assertThrows(InvalidCommandException.class, () -> db.incr("one", Long.MAX_VALUE));
            assertEquals("1", value(db, "one"));

            // A value that is not an integer: an error, nothing changed (TTL included).
            db.execute("INSERT INTO kv (key, value, ttl) VALUES ('name', 'alice', 100)");
            assertThrows(InvalidCommandException.class, () -> db.incr("name", 1));
            assertEquals("alice", value(db, "name"));
            assertTrue(ttl(db, "name") >= 99);
            for (String bad : new String[] {"07", "+7", "-0", " 7", "7.0", ""}) {
                db.execute("INSERT INTO kv (key, value) VALUES ('bad', ?)", bad);
                assertThrows(InvalidCommandException.class, () -> db.incr("bad", 1), bad);
            }

            // A present counter keeps its expiry.
            db.execute("INSERT INTO kv (key, value, ttl) VALUES ('rate', '10', 100)");
            assertEquals(11, db.incr("rate", 1));
            assertTrue(ttl(db, "rate") >= 99);
            assertThrows(UsageException.class, () -> db.incr(5L, 1));
            assertEquals(1, db.incr(new byte[] {0, (byte) 0xfe}, 1)); // a binary key
        }
    }

    @Test
    void onAPool() throws Exception {
        TestServer s = server();
        try (Pool pool = new Pool(s.options().user("alice").password(TestServer.PASSWORD), 2)) {
            assertTrue(pool.insertIfAbsent("p", "1", 60));
            assertFalse(pool.insertIfAbsent("p", "2"));
            assertFalse(pool.cas("p", "2", "3"));
            assertTrue(pool.cas("p", "1", "41"));
            assertEquals(42, pool.incr("p", 1));
            assertThrows(InvalidCommandException.class, () -> pool.incr("p", Long.MAX_VALUE));
            assertEquals(42, pool.incr("p", 0));
        }
    }

    /** Eight connections, one key: no increment and no compare-and-set is lost. */
    @Test
    void underConcurrency() throws Exception {
        TestServer s = server();
        int workers = 8;
        List<Connection> conns = new ArrayList<>();
        ExecutorService ex = Executors.newFixedThreadPool(workers);
        try {
            for (int i = 0; i < workers; i++) {
                conns.add(s.alice());
            }

            int incrs = 500;
            List<Future<List<Long>>> counting = new ArrayList<>();
            for (Connection c : conns) {
                counting.add(ex.submit(() -> {
                    List<Long> seen = new ArrayList<>();
                    for (int i = 0; i < incrs; i++) {
                        seen.add(c.incr("counter", 1));
                    }
                    return seen;
                }));
            }
            Set<Long> seen = new HashSet<>();
            for (Future<List<Long>> f : counting) {
                for (long n : f.get()) {
                    assertTrue(n >= 1 && n <= workers * incrs && seen.add(n), "value " + n + " returned twice or out of range");
                }
            }
            assertEquals(String.valueOf(workers * incrs), value(conns.get(0), "counter"));

            int swaps = 200;
            conns.get(0).execute("INSERT INTO kv (key, value) VALUES ('cas', '0')");
            List<Future<Integer>> swapping = new ArrayList<>();
            for (Connection c : conns) {
                swapping.add(ex.submit(() -> {
                    int misses = 0;
                    for (int done = 0; done < swaps; ) {
                        long n = Long.parseLong(value(c, "cas"));
                        if (c.cas("cas", Long.toString(n), Long.toString(n + 1))) {
                            done++;
                        } else {
                            misses++;
                        }
                    }
                    return misses;
                }));
            }
            int misses = 0;
            for (Future<Integer> f : swapping) {
                misses += f.get();
            }
            assertEquals(String.valueOf(workers * swaps), value(conns.get(0), "cas"));
            System.out.println("ConditionalTest: " + misses + " compare-and-sets lost a race and were retried");
        } finally {
            ex.shutdownNow();
            for (Connection c : conns) {
                c.close();
            }
        }
    }
}
