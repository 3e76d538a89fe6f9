package dev.velocitydb.client;

/**
 * Wire code 0x0006: the server reported a framing or payload violation, or this client found one
 * in what the server sent (see {@link FrameException}; the connection is then closed when the
 * frame boundary is lost). Also thrown when TLS is on at one side only.
 */
public class ProtocolErrorException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public ProtocolErrorException(String message) {
        super(message, ErrorCode.PROTOCOL_ERROR.wire());
    }

    public ProtocolErrorException(String message, Throwable cause) {
        super(message, ErrorCode.PROTOCOL_ERROR.wire(), cause);
    }
}
