package dev.velocitydb.client;

import java.time.Duration;
import java.util.ArrayDeque;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * A thread-safe pool of connections to one server, for requests from many threads at once. At
 * most {@code maxSize} connections are open; a thread that finds them all busy waits (up to the
 * options' timeout). Connections are opened when first needed and kept for reuse; one that broke
 * (the server closed it, a time-out, a framing error) is dropped, and the next caller gets a new
 * one. The password is turned into the Argon2id credential once, by the first connection, and
 * later connections log in with that credential.
 *
 * <pre>{@code
 * try (Pool pool = new Pool(new Options().user("alice").password(pw), 8)) {
 *     pool.execute("INSERT INTO kv (key, value) VALUES (?, ?)", "k", "v");   // from any thread
 *     long n = pool.call(db -> db.execute("SELECT COUNT(*) FROM kv").scalarLong());
 *     try (Pool.Lease lease = pool.acquire()) {                            // one connection, held
 *         lease.connection().pipeline().add(...).add(...).run();
 *     }
 * }
 * }</pre>
 */
public final class Pool implements AutoCloseable {
    private final Options options;
    private final int maxSize;
    private final Semaphore permits;
    private final ArrayDeque<Connection> idle = new ArrayDeque<>();
    private volatile byte[] credential;
    private volatile boolean closed;

    public Pool(Options options, int maxSize) {
        if (maxSize < 1) {
            throw new UsageException("a pool holds at least one connection");
        }
        this.options = options.copy();
        this.maxSize = maxSize;
        this.permits = new Semaphore(maxSize, true);
    }

    public int maxSize() {
        return maxSize;
    }

    /** Connections open and not in use right now. */
    public synchronized int idleCount() {
        return idle.size();
    }

    /** A connection held until the lease is closed; then it goes back to the pool. */
    public final class Lease implements AutoCloseable {
        private Connection conn;

        private Lease(Connection conn) {
            this.conn = conn;
        }

        public Connection connection() {
            if (conn == null) {
                throw new UsageException("this lease was returned to the pool");
            }
            return conn;
        }

        @Override
        public void close() {
            if (conn != null) {
                Connection c = conn;
                conn = null;
                release(c);
            }
        }
    }

    /** Takes an idle connection, or opens one; waits while {@code maxSize} are in use. */
    public Lease acquire() {
        if (closed) {
            throw new UsageException("the pool is closed");
        }
        Duration wait = options.timeout();
        try {
            if (!permits.tryAcquire(wait.toMillis(), TimeUnit.MILLISECONDS)) {
                throw new VelocityException("no connection of the pool became free within " + wait.toMillis() + " ms");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new VelocityException("interrupted while waiting for a connection of the pool", VelocityException.NO_CODE, e);
        }
        try {
            Connection c;
            synchronized (this) {
                c = idle.pollFirst();
            }
            while (c != null && c.isClosed()) {
                synchronized (this) {
                    c = idle.pollFirst();
                }
            }
            if (c == null) {
                c = open();
            }
            return new Lease(c);
        } catch (RuntimeException | Error e) {
            permits.release();
            throw e;
        }
    }

    private Connection open() {
        Options o = options;
        byte[] cred = credential;
        if (cred != null) {
            o = options.copy().password(null).credential(cred);
        }
        Connection c = Velocity.connect(o);
        if (cred == null && c.loginCredential != null) {
            credential = c.loginCredential.clone();
        }
        return c;
    }

    private void release(Connection c) {
        try {
            boolean keep;
            synchronized (this) {
                keep = !closed && !c.isClosed();
                if (keep) {
                    idle.addFirst(c);
                }
            }
            if (!keep) {
                c.close();
            }
        } finally {
            permits.release();
        }
    }

    /** Runs {@code fn} with a connection of the pool and returns what it returns. */
    public <T> T call(Function<Connection, T> fn) {
        try (Lease l = acquire()) {
            return fn.apply(l.connection());
        }
    }

    /** Runs {@code fn} with a connection of the pool. */
    public void run(Consumer<Connection> fn) {
        try (Lease l = acquire()) {
            fn.accept(l.connection());
        }
    }

    /** {@link Connection#execute(String, Object...)} on a connection of the pool. */
    public Result execute(String sql, Object... params) {
        return call(c -> c.execute(sql, params));
    }

    /** {@link Connection#execute(String, List)} on a connection of the pool. */
    public Result execute(String sql, List<?> params) {
        return call(c -> c.execute(sql, params));
    }

    /** {@link Connection#insertIfAbsent(Object, Object)} on a connection of the pool. */
    public boolean insertIfAbsent(Object key, Object value) {
        return call(c -> c.insertIfAbsent(key, value));
    }

    /** {@link Connection#insertIfAbsent(Object, Object, long)} on a connection of the pool. */
    public boolean insertIfAbsent(Object key, Object value, long ttlSeconds) {
        return call(c -> c.insertIfAbsent(key, value, ttlSeconds));
    }

    /** {@link Connection#cas(Object, Object, Object)} on a connection of the pool. */
    public boolean cas(Object key, Object expected, Object newValue) {
        return call(c -> c.cas(key, expected, newValue));
    }

    /** {@link Connection#incr(Object, long)} on a connection of the pool. */
    public long incr(Object key, long by) {
        return call(c -> c.incr(key, by));
    }

    /** Closes the idle connections now, and each one in use when its lease ends. */
    @Override
    public void close() {
        List<Connection> toClose;
        synchronized (this) {
            closed = true;
            toClose = List.copyOf(idle);
            idle.clear();
        }
        for (Connection c : toClose) {
            c.close();
        }
    }
}
