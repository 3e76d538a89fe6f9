package dev.velocitydb.client;

/**
 * A framing violation in bytes received from the server. {@link #kind()} names it as the shared
 * test vectors do ({@code bad_magic}, {@code bad_version}, {@code too_long}, {@code bad_checksum},
 * {@code unknown_type}, {@code malformed}); {@link #fatal()} says whether the frame boundary is
 * lost, so that the connection must close.
 */
public class FrameException extends ProtocolErrorException {
    private static final long serialVersionUID = 1L;

    private final String kind;
    private final boolean fatal;

    public FrameException(String kind, String message, boolean fatal) {
        super(message);
        this.kind = kind;
        this.fatal = fatal;
    }

    public String kind() {
        return kind;
    }

    public boolean fatal() {
        return fatal;
    }
}
