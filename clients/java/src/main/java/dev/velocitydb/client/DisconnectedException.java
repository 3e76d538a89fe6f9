package dev.velocitydb.client;

/**
 * The server sent DISCONNECT (shutdown, idle timeout, too many failed logins) or closed the
 * connection, or the connection could not be made or was lost. The connection is closed.
 */
public class DisconnectedException extends VelocityException {
    private static final long serialVersionUID = 1L;

    private final String reason;
    private final int disconnectCode;

    public DisconnectedException(String message) {
        this(message, NO_CODE, "", null);
    }

    public DisconnectedException(String message, Throwable cause) {
        this(message, NO_CODE, "", cause);
    }

    /** {@code disconnectCode} and {@code reason} are the DISCONNECT frame's, when there was one. */
    public DisconnectedException(String message, int disconnectCode, String reason, Throwable cause) {
        super(message, NO_CODE, cause);
        this.disconnectCode = disconnectCode;
        this.reason = reason;
    }

    /** The DISCONNECT frame's reason, or "" when the connection simply ended. */
    public String reason() {
        return reason;
    }

    /** The DISCONNECT frame's code, or {@link #NO_CODE} when there was no DISCONNECT frame. */
    public int disconnectCode() {
        return disconnectCode;
    }
}
