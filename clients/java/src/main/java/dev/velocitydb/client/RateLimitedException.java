package dev.velocitydb.client;

/** Wire code 0x0002: a rate limit refused the request; it was not executed. */
public class RateLimitedException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public RateLimitedException(String message) {
        super(message, ErrorCode.RATE_LIMITED.wire());
    }

    public RateLimitedException(String message, Throwable cause) {
        super(message, ErrorCode.RATE_LIMITED.wire(), cause);
    }
}
