package dev.velocitydb.client;

/** Wire code 0x0007: the connection limit or a shard's queue limit was reached. */
public class ServerOverloadedException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public ServerOverloadedException(String message) {
        super(message, ErrorCode.SERVER_OVERLOADED.wire());
    }

    public ServerOverloadedException(String message, Throwable cause) {
        super(message, ErrorCode.SERVER_OVERLOADED.wire(), cause);
    }
}
