package dev.velocitydb.client;

/**
 * The caller's input cannot be sent: a statement beyond the server's {@code max_payload}, a user
 * name, password or API key that is too long, parameters that do not match the {@code ?}
 * placeholders, or a parameter of a type the dialect has no literal for.
 */
public class UsageException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public UsageException(String message) {
        super(message);
    }

    public UsageException(String message, Throwable cause) {
        super(message, NO_CODE, cause);
    }
}
