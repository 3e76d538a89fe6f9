package dev.velocitydb.client;

/** The wire error codes of the Velocity protocol (profile section 6). */
public enum ErrorCode {
    INVALID_CREDENTIALS(0x0001),
    RATE_LIMITED(0x0002),
    INVALID_COMMAND(0x0003),
    KEY_NOT_FOUND(0x0004),
    STORAGE_ERROR(0x0005),
    PROTOCOL_ERROR(0x0006),
    SERVER_OVERLOADED(0x0007),
    UNAUTHORIZED(0x0008),
    /** An extension for cluster nodes: the write may or may not have been applied; reading the key tells. */
    OUTCOME_UNKNOWN(0x0009);

    private final int wire;

    ErrorCode(int wire) {
        this.wire = wire;
    }

    /** The code as it travels in ERROR and AUTH_RESPONSE frames. */
    public int wire() {
        return wire;
    }

    /** The code for a wire value, or {@code null} for one this client does not know. */
    public static ErrorCode of(int wire) {
        for (ErrorCode c : values()) {
            if (c.wire == wire) {
                return c;
            }
        }
        return null;
    }
}
