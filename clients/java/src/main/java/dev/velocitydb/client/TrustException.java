package dev.velocitydb.client;

/**
 * The server's identity could not be trusted: an unknown host that was not accepted, a key that
 * differs from the one recorded in the known-hosts file or pinned, or a SERVER_INFO fingerprint
 * that is not the key the TLS handshake presented. The connection was refused.
 */
public class TrustException extends VelocityException {
    private static final long serialVersionUID = 1L;

    public TrustException(String message) {
        super(message);
    }
}
