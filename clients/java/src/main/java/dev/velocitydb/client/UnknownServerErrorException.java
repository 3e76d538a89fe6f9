package dev.velocitydb.client;

/** An ERROR with a code this client does not know (from a newer server); {@link #code()} has it. */
public class UnknownServerErrorException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public UnknownServerErrorException(String message, int code) {
        super(message, code);
    }
}
