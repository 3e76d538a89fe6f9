package dev.velocitydb.client;

/** Wire code 0x0001: a failed login (wrong password, unknown user or API key). */
public class InvalidCredentialsException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public InvalidCredentialsException(String message) {
        super(message, ErrorCode.INVALID_CREDENTIALS.wire());
    }

    public InvalidCredentialsException(String message, Throwable cause) {
        super(message, ErrorCode.INVALID_CREDENTIALS.wire(), cause);
    }
}
