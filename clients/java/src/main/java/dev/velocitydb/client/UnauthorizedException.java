package dev.velocitydb.client;

/** Wire code 0x0008: not logged in yet, or the user's role forbids the request (a read-only user writing). */
public class UnauthorizedException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public UnauthorizedException(String message) {
        super(message, ErrorCode.UNAUTHORIZED.wire());
    }

    public UnauthorizedException(String message, Throwable cause) {
        super(message, ErrorCode.UNAUTHORIZED.wire(), cause);
    }
}
