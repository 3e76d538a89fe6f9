package dev.velocitydb.client;

/** Wire code 0x0005: the write could not be made durable; it was not acknowledged. */
public class StorageErrorException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public StorageErrorException(String message) {
        super(message, ErrorCode.STORAGE_ERROR.wire());
    }

    public StorageErrorException(String message, Throwable cause) {
        super(message, ErrorCode.STORAGE_ERROR.wire(), cause);
    }
}
