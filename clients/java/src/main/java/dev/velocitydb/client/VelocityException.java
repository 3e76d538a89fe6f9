package dev.velocitydb.client;

/**
 * The base of every exception this library throws. An error that the server reported carries its
 * wire code ({@link #code()}, {@link #errorCode()}); the subclass names it, one per code, so that
 * callers can {@code catch (KeyNotFoundException e)}. Errors raised by the client itself
 * ({@link TrustException}, {@link UsageException}, {@link DisconnectedException}, time-outs) have
 * no code: {@link #code()} is {@link #NO_CODE}.
 *
 * <p>Unchecked, as in most Java database clients, so that it passes through lambdas (see
 * {@link Pool#call}).
 */
public class VelocityException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** {@link #code()} of an error that did not come from the server. */
    public static final int NO_CODE = -1;

    private final int code;

    public VelocityException(String message) {
        this(message, NO_CODE, null);
    }

    public VelocityException(String message, int code) {
        this(message, code, null);
    }

    public VelocityException(String message, int code, Throwable cause) {
        super(message, cause);
        this.code = code;
    }

    /** The wire code (1–9, or another from a newer server), or {@link #NO_CODE}. */
    public int code() {
        return code;
    }

    /** Whether the server sent this error with a wire code. */
    public boolean hasCode() {
        return code != NO_CODE;
    }

    /** The code as an enum constant; {@code null} for client-side errors and unknown codes. */
    public ErrorCode errorCode() {
        return code == NO_CODE ? null : ErrorCode.of(code);
    }

    /** The exception for an ERROR frame, or for a failed AUTH_RESPONSE. */
    public static VelocityException forCode(int code, String message) {
        ErrorCode c = ErrorCode.of(code);
        if (c == null) {
            return new UnknownServerErrorException(String.format("server error 0x%04x: %s", code, message), code);
        }
        switch (c) {
            case INVALID_CREDENTIALS:
                return new InvalidCredentialsException(message);
            case RATE_LIMITED:
                return new RateLimitedException(message);
            case INVALID_COMMAND:
                return new InvalidCommandException(message);
            case KEY_NOT_FOUND:
                return new KeyNotFoundException(message);
            case STORAGE_ERROR:
                return new StorageErrorException(message);
            case PROTOCOL_ERROR:
                return new ProtocolErrorException(message);
            case SERVER_OVERLOADED:
                return new ServerOverloadedException(message);
            case UNAUTHORIZED:
                return new UnauthorizedException(message);
            case OUTCOME_UNKNOWN:
                return new OutcomeUnknownException(message);
            default:
                throw new AssertionError(c);
        }
    }
}
