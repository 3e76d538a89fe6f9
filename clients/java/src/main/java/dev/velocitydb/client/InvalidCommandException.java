package dev.velocitydb.client;

/** Wire code 0x0003: SQL that does not parse or is outside the dialect, or a result too large for one reply. */
public class InvalidCommandException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public InvalidCommandException(String message) {
        super(message, ErrorCode.INVALID_COMMAND.wire());
    }

    public InvalidCommandException(String message, Throwable cause) {
        super(message, ErrorCode.INVALID_COMMAND.wire(), cause);
    }
}
