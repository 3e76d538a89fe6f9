package dev.velocitydb.client;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;

/**
 * One connection to a Velocity server; {@link Velocity#connect(Options)} makes one. Closing it
 * (try-with-resources) says DISCONNECT and closes the socket.
 *
 * <p><b>Threads.</b> A connection runs one request (or one pipeline) at a time: every call holds
 * it from sending to the last reply, so calls from several threads are serialised, never
 * interleaved, and each thread gets its own replies. For requests in parallel, use a {@link Pool}
 * (or one connection per thread); for many requests from one thread, a {@link Pipeline}. {@link
 * #close()} may be called from any thread, and ends a call that is waiting.
 */
public final class Connection implements AutoCloseable {
    /**
     * Unanswered requests a pipeline keeps in flight: enough to fill the link, few enough that
     * neither side's socket buffers fill while the other waits (which would deadlock).
     */
    public static final int PIPELINE_WINDOW = 1024;

    private final Socket socket;
    private final InputStream in;
    private final OutputStream out;
    private final FrameDecoder decoder = new FrameDecoder(Protocol.PREAUTH_PAYLOAD_BYTES_MAX);
    private final byte[] readBuf = new byte[64 * 1024];
    private final ReentrantLock lock = new ReentrantLock();
    private final long timeoutMs;
    private volatile boolean closed;
    private ServerInfo info;
    /** The credential this connection logged in with, so that a pool derives it only once. */
    byte[] loginCredential;
    String loginUser;

    Connection(Socket socket, long timeoutMs) throws IOException {
        this.socket = socket;
        this.in = socket.getInputStream();
        this.out = socket.getOutputStream();
        this.timeoutMs = timeoutMs;
    }

    void setServerInfo(ServerInfo info) {
        this.info = info;
    }

    FrameDecoder decoder() {
        return decoder;
    }

    // -- I/O -----------------------------------------------------------------------------------

    void send(byte[] data) {
        try {
            out.write(data);
            out.flush();
        } catch (IOException e) {
            closeNow();
            throw new DisconnectedException("connection lost while sending: " + e.getMessage(), e);
        }
    }

    Frame recvFrame() {
        while (true) {
            Frame f;
            try {
                f = decoder.next();
            } catch (FrameException e) {
                if (e.fatal()) {
                    closeNow();
                }
                throw e;
            }
            if (f != null) {
                return f;
            }
            int n;
            try {
                n = in.read(readBuf);
            } catch (SocketTimeoutException e) {
                // A reply may still come: this connection would be out of step, so it closes.
                closeNow();
                throw new VelocityException("timed out after " + timeoutMs + " ms waiting for the server; the connection was closed",
                        VelocityException.NO_CODE, e);
            } catch (IOException e) {
                boolean wasClosed = closed;
                closeNow();
                throw new DisconnectedException(wasClosed ? "the connection is closed" : "connection lost: " + e.getMessage(), e);
            }
            if (n < 0) {
                closeNow();
                throw new DisconnectedException("the server closed the connection");
            }
            decoder.feed(readBuf, 0, n);
        }
    }

    /**
     * The reply to the oldest unanswered request. Errors that leave the frame boundary intact
     * (ERROR frames, an unknown frame type, a malformed payload) are returned in the reply, so
     * that a pipeline reads every reply; DISCONNECT and fatal framing errors are thrown.
     */
    Reply readReply() {
        Frame f;
        try {
            f = recvFrame();
        } catch (FrameException e) {
            if (e.fatal()) {
                throw e;
            }
            return Reply.of(e);
        }
        return toReply(f);
    }

    Reply toReply(Frame f) {
        try {
            switch (f.type()) {
                case Protocol.RESPONSE:
                case Protocol.STATS:
                    return Reply.of(Protocol.parseResult(f.payload()));
                case Protocol.ERROR: {
                    Protocol.CodeMessage cm = Protocol.parseCodeMessage(f.payload());
                    return Reply.of(VelocityException.forCode(cm.code(), cm.message()));
                }
                case Protocol.PONG:
                    return Reply.pong(f.payload());
                case Protocol.DISCONNECT: {
                    int code = VelocityException.NO_CODE;
                    String reason = "";
                    try {
                        Protocol.CodeMessage cm = Protocol.parseCodeMessage(f.payload());
                        code = cm.code();
                        reason = cm.message();
                    } catch (FrameException e) {
                        // a malformed DISCONNECT still ends the connection
                    }
                    closeNow();
                    throw new DisconnectedException("server disconnected: " + reason, code, reason, null);
                }
                default:
                    return Reply.of(new ProtocolErrorException(
                            String.format("unexpected frame type 0x%02x in reply to a request", f.type())));
            }
        } catch (FrameException e) {
            return Reply.of(e);
        }
    }

    private void enter() {
        lock.lock();
        if (closed) {
            lock.unlock();
            throw new DisconnectedException("the connection is closed");
        }
    }

    /** A COMMAND frame for {@code sql}, refused here when the server would refuse its size. */
    byte[] command(String sql) {
        if (closed) {
            throw new DisconnectedException("the connection is closed");
        }
        byte[] data = Utf8.encode(sql, "statement");
        long max = info.maxPayload();
        if (data.length > max) {
            throw new UsageException("statement is " + data.length + " bytes; the server accepts " + max);
        }
        return Protocol.encodeFrame(Protocol.COMMAND, data);
    }

    // -- requests ------------------------------------------------------------------------------

    /**
     * Runs one statement and returns its result, or throws the error the server reported (the
     * subclass of {@link VelocityException} for its wire code). {@code ?} placeholders outside
     * quoted literals are replaced by {@code params}, each quoted so that it cannot change the
     * statement (see {@link Sql#quote}); with no parameters (or a {@code null} array) the SQL is
     * sent as it is.
     */
    public Result execute(String sql, Object... params) {
        return request(command(params == null || params.length == 0 ? sql : Sql.bind(sql, Arrays.asList(params)))).result();
    }

    /** As {@link #execute(String, Object...)}, binding exactly {@code params}. */
    public Result execute(String sql, List<?> params) {
        return request(command(Sql.bind(sql, params))).result();
    }

    // -- conditional writes and counters (each one statement, so atomic on the key's shard) -----

    /**
     * Writes {@code key = value}, without expiry, only if the key is absent (or expired); a live
     * key is left as it is, value and expiry.
     *
     * @param key a {@code String} or {@code byte[]}, quoted as {@link Sql#quote} quotes it
     * @param value a {@code String} or {@code byte[]}
     * @return true when it was inserted, false when the key was there
     * @throws UsageException for a key or value of another type
     */
    public boolean insertIfAbsent(Object key, Object value) {
        return affectedOne(Conditional.insertIfAbsent(key, value));
    }

    /**
     * As {@link #insertIfAbsent(Object, Object)}, the new key expiring after {@code ttlSeconds}
     * (1 to 3,153,600,000); a live key keeps its own expiry.
     */
    public boolean insertIfAbsent(Object key, Object value, long ttlSeconds) {
        return affectedOne(Conditional.insertIfAbsent(key, value, ttlSeconds));
    }

    /**
     * Compare and set: replaces the value of {@code key} with {@code newValue} only if the key is
     * live and holds exactly the bytes {@code expected}. The key keeps its expiry.
     *
     * @param key a {@code String} or {@code byte[]}
     * @param expected the value it must hold, a {@code String} or {@code byte[]}
     * @param newValue the value it then gets, a {@code String} or {@code byte[]}
     * @return true when it held and the value was replaced; false when the key holds something
     *     else or is missing (not an error)
     */
    public boolean cas(Object key, Object expected, Object newValue) {
        return affectedOne(Conditional.cas(key, expected, newValue));
    }

    /**
     * Adds {@code by} (which may be negative) to the counter at {@code key} and returns its new
     * value, in one round trip. An absent (or expired) key counts from 0: it is created holding
     * {@code by}, without expiry; a present key keeps its expiry. The value is the decimal text of
     * a signed 64-bit integer, as Redis's INCRBY keeps it.
     *
     * @param key a {@code String} or {@code byte[]}
     * @throws InvalidCommandException when the value is not such an integer or the sum would
     *     overflow a {@code long}; nothing is changed
     */
    public long incr(Object key, long by) {
        Conditional.Statement st = Conditional.incr(key, by);
        return Conditional.counterValue(execute(st.sql(), st.params()));
    }

    private boolean affectedOne(Conditional.Statement st) {
        return execute(st.sql(), st.params()).affected() == 1;
    }

    private Reply request(byte[] frame) {
        enter();
        try {
            send(frame);
            return readReply();
        } finally {
            lock.unlock();
        }
    }

    /** Collects statements to send together; see {@link Pipeline}. */
    public Pipeline pipeline() {
        return new Pipeline(this);
    }

    /**
     * Sends request frames without waiting, keeping at most {@code window} unanswered; returns
     * the replies in request order.
     */
    List<Reply> runPipelined(List<byte[]> frames, int window) {
        enter();
        try {
            List<Reply> replies = new ArrayList<>(frames.size());
            ByteArrayOutputStream batch = new ByteArrayOutputStream();
            int inFlight = 0;
            for (byte[] f : frames) {
                batch.writeBytes(f);
                inFlight++;
                if (inFlight >= window) {
                    send(batch.toByteArray());
                    batch.reset();
                    while (inFlight > window / 2) {
                        replies.add(readReply());
                        inFlight--;
                    }
                }
            }
            if (batch.size() > 0) {
                send(batch.toByteArray());
            }
            for (; inFlight > 0; inFlight--) {
                replies.add(readReply());
            }
            return replies;
        } finally {
            lock.unlock();
        }
    }

    /** PING with up to 64 bytes; returns what the PONG echoed. */
    public byte[] ping(byte[] data) {
        if (data.length > Protocol.PING_PAYLOAD_BYTES_MAX) {
            throw new UsageException("PING carries at most " + Protocol.PING_PAYLOAD_BYTES_MAX + " bytes");
        }
        Reply r = request(Protocol.encodePing(data));
        if (r.isPong()) {
            return r.pong();
        }
        r.result(); // throws the error
        throw new ProtocolErrorException("PING answered with a result set");
    }

    public byte[] ping() {
        return ping(new byte[0]);
    }

    /** The STATS frame: server counters and latency percentiles as (name, value) rows. */
    public Result stats() {
        return request(Protocol.encodeStats()).result();
    }

    /** Sends a pre-built frame and returns its reply, errors included (for tests and tools). */
    public Reply sendRaw(byte[] frame) {
        return request(frame);
    }

    public ServerInfo serverInfo() {
        return info;
    }

    /** The server's fingerprint, {@code SHA256:…}. */
    public String fingerprint() {
        return info.fingerprintText();
    }

    public boolean isClosed() {
        return closed;
    }

    /** Says DISCONNECT and closes; does nothing when already closed. Never throws. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        if (lock.tryLock()) {
            try {
                if (!closed) {
                    try {
                        out.write(Protocol.encodeDisconnect(0, "bye"));
                        out.flush();
                    } catch (IOException e) {
                        // the server is gone already
                    }
                }
            } finally {
                lock.unlock();
            }
        }
        closeNow();
    }

    /** Closes the socket without a word (another thread's waiting call ends with an error). */
    void closeNow() {
        closed = true;
        try {
            socket.close();
        } catch (IOException e) {
            // nothing more to do
        }
    }
}
