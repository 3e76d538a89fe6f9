package dev.velocitydb.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A connection shared by threads, and the pool, against the real velocityd (TLS). */
class ConcurrencyTest {
    @TempDir
    Path tmp;

    TestServer s;

    @BeforeEach
    void start() throws Exception {
        s = TestServer.start(tmp, 2);
    }

    @AfterEach
    void stop() {
        s.stop();
    }

    @Test
    void threadsSharingOneConnectionEachGetTheirOwnReplies() throws Exception {
        ExecutorService ex = Executors.newFixedThreadPool(4);
        try (Connection db = s.alice()) {
            List<Future<Integer>> jobs = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                int id = t;
                jobs.add(ex.submit(() -> {
                    int ok = 0;
                    for (int i = 0; i < 300; i++) {
                        String k = "t" + id + ":" + i;
                        db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", k, "from " + id + " #" + i);
                        if (i % 3 == 0) { // a pipeline in between, from the same thread
                            List<Result> r = db.pipeline().add("SELECT value FROM kv WHERE key = ?", k)
                                    .add("SELECT COUNT(*) FROM kv WHERE key LIKE ?", "t" + id + ":%").run();
                            assertEquals("from " + id + " #" + i, r.get(0).scalarText());
                            assertEquals((long) i + 1, r.get(1).scalarLong());
                        }
                        assertEquals("from " + id + " #" + i, db.execute("SELECT value FROM kv WHERE key = ?", k).scalarText());
                        ok++;
                    }
                    return ok;
                }));
            }
            for (Future<Integer> f : jobs) {
                assertEquals(300, f.get());
            }
            assertEquals(1200L, db.execute("SELECT COUNT(*) FROM kv").scalarLong());
        } finally {
            ex.shutdownNow();
        }
    }

    @Test
    void poolServesManyThreadsWithAtMostMaxSizeConnections() throws Exception {
        ExecutorService ex = Executors.newFixedThreadPool(8);
        AtomicInteger notFound = new AtomicInteger();
        try (Pool pool = new Pool(s.options().user("alice").password(TestServer.PASSWORD), 3)) {
            List<Future<?>> jobs = new ArrayList<>();
            for (int t = 0; t < 8; t++) {
                int id = t;
                jobs.add(ex.submit(() -> {
                    for (int i = 0; i < 100; i++) {
                        String k = "p" + id + ":" + i;
                        pool.execute("INSERT INTO kv (key, value) VALUES (?, ?)", k, String.valueOf(i));
                        assertEquals(String.valueOf(i), pool.call(c -> c.execute("SELECT value FROM kv WHERE key = ?", k).scalarText()));
                        try {
                            pool.execute("SELECT value FROM kv WHERE key = ?", k + ":absent");
                        } catch (KeyNotFoundException e) {
                            notFound.incrementAndGet(); // a server error leaves the connection usable
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : jobs) {
                f.get();
            }
            assertEquals(800, notFound.get());
            assertTrue(pool.idleCount() <= 3, "idle " + pool.idleCount());
            assertEquals(800L, pool.execute("SELECT COUNT(*) FROM kv").scalarLong());
            // At most maxSize connections were ever opened: the server counted them (one more is
            // the start-up probe that saw it listening).
            try (Pool.Lease lease = pool.acquire()) {
                Map<String, Object> stats = lease.connection().execute("SHOW STATS").asMap();
                assertTrue((Long) stats.get("connections") <= 3, stats.toString());
                assertTrue((Long) stats.get("connections_total") <= 4, stats.toString());
            }
            // A connection that broke is dropped, and the next caller gets a new one.
            try (Pool.Lease lease = pool.acquire()) {
                lease.connection().close();
            }
            for (int i = 0; i < 5; i++) {
                assertEquals(800L, pool.execute("SELECT COUNT(*) FROM kv").scalarLong());
            }
            Pool.Lease l = pool.acquire();
            l.close();
            assertThrows(UsageException.class, l::connection);
        } finally {
            ex.shutdownNow();
        }
    }

    @Test
    void aWaitingCallEndsWhenAnotherThreadCloses() throws Exception {
        Connection db = s.alice();
        Pipeline p = db.pipeline();
        for (int i = 0; i < 50_000; i++) {
            p.add("INSERT INTO kv (key, value) VALUES (?, ?)", "c" + i, "v");
        }
        Thread closer = new Thread(() -> {
            TestServer.sleep(100);
            db.close();
        });
        closer.start();
        // Either the pipeline finished first, or it ends with DisconnectedException: never hangs.
        try {
            assertEquals(50_000, p.run().size());
        } catch (DisconnectedException e) {
            assertTrue(db.isClosed());
        }
        closer.join();
        assertTrue(db.isClosed());
        assertThrows(DisconnectedException.class, db::ping);
    }
}
