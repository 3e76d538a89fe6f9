package dev.velocitydb.client;

/**
 * The server's answer to one request: a {@link Result}, the error it reported, or (for a PING)
 * the echoed bytes. Pipelines hand back one per statement, in order.
 */
public final class Reply {
    private final Result result;
    private final VelocityException error;
    private final byte[] pong;

    private Reply(Result result, VelocityException error, byte[] pong) {
        this.result = result;
        this.error = error;
        this.pong = pong;
    }

    static Reply of(Result r) {
        return new Reply(r, null, null);
    }

    static Reply of(VelocityException e) {
        return new Reply(null, e, null);
    }

    static Reply pong(byte[] data) {
        return new Reply(null, null, data);
    }

    public boolean isError() {
        return error != null;
    }

    public boolean isPong() {
        return pong != null;
    }

    /** The result; throws the reported error instead if the server answered with one. */
    public Result result() {
        if (error != null) {
            throw error;
        }
        if (result == null) {
            throw new ProtocolErrorException("the reply was a PONG, not a result set");
        }
        return result;
    }

    /** The error the server reported, or {@code null}. */
    public VelocityException error() {
        return error;
    }

    /** The bytes a PONG echoed, or {@code null}. */
    public byte[] pong() {
        return pong == null ? null : pong.clone();
    }

    @Override
    public String toString() {
        if (error != null) {
            return "Reply[" + error.getClass().getSimpleName() + ": " + error.getMessage() + "]";
        }
        return pong != null ? "Reply[PONG " + pong.length + " bytes]" : "Reply[" + result + "]";
    }
}
