package dev.velocitydb.client;

/** Wire code 0x0004: a point SELECT or an UPDATE of a missing key. */
public class KeyNotFoundException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public KeyNotFoundException(String message) {
        super(message, ErrorCode.KEY_NOT_FOUND.wire());
    }

    public KeyNotFoundException(String message, Throwable cause) {
        super(message, ErrorCode.KEY_NOT_FOUND.wire(), cause);
    }
}
