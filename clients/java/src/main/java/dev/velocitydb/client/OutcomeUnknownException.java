package dev.velocitydb.client;

/**
 * Wire code 0x0009, an extension for cluster nodes: the write reached the cluster but its outcome
 * is unknown (a leader failed or timed out midway); it may or may not have been applied, and
 * reading the key tells.
 */
public class OutcomeUnknownException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public OutcomeUnknownException(String message) {
        super(message, ErrorCode.OUTCOME_UNKNOWN.wire());
    }

    public OutcomeUnknownException(String message, Throwable cause) {
        super(message, ErrorCode.OUTCOME_UNKNOWN.wire(), cause);
    }
}
