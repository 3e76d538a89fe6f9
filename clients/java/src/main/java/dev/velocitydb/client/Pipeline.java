package dev.velocitydb.client;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Statements sent together, without waiting for each reply:
 *
 * <pre>{@code
 * Pipeline p = db.pipeline();
 * for (int i = 0; i < 10_000; i++) {
 *     p.add("INSERT INTO kv (key, value) VALUES (?, ?)", "k" + i, "v");
 * }
 * List<Result> results = p.run();   // one per statement, in order
 * }</pre>
 *
 * <p>{@link #run()} sends what was queued and returns the results; the first error is thrown
 * after every reply has been read, so the connection stays in step and usable. {@link
 * #runReplies()} returns every reply with errors in place of their results. At most {@link
 * Connection#PIPELINE_WINDOW} requests are in flight at once, so that a pipeline of any length
 * cannot fill both sides' socket buffers and deadlock.
 */
public final class Pipeline {
    private final Connection conn;
    private List<byte[]> frames = new ArrayList<>();

    Pipeline(Connection conn) {
        this.conn = conn;
    }

    /**
     * Queues a statement; {@code ?} placeholders outside quoted literals are replaced by
     * {@code params}, each quoted (see {@link Sql#quote}). With no parameters (or a {@code null}
     * array) the SQL is sent as it is.
     */
    public Pipeline add(String sql, Object... params) {
        frames.add(conn.command(params == null || params.length == 0 ? sql : Sql.bind(sql, Arrays.asList(params))));
        return this;
    }

    /** Queues a statement, binding exactly {@code params} to its {@code ?} placeholders. */
    public Pipeline add(String sql, List<?> params) {
        frames.add(conn.command(Sql.bind(sql, params)));
        return this;
    }

    /** Statements queued and not yet run. */
    public int size() {
        return frames.size();
    }

    /** Runs the queued statements; throws the first error once every reply has been read. */
    public List<Result> run() {
        List<Reply> replies = runReplies();
        List<Result> out = new ArrayList<>(replies.size());
        for (Reply r : replies) {
            if (r.isError()) {
                throw r.error();
            }
            out.add(r.result());
        }
        return out;
    }

    /** Runs the queued statements; each reply in order, errors in place of their results. */
    public List<Reply> runReplies() {
        List<byte[]> f = frames;
        frames = new ArrayList<>();
        return conn.runPipelined(f, Connection.PIPELINE_WINDOW);
    }
}
