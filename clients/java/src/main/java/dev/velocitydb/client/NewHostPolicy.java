package dev.velocitydb.client;

/**
 * What to do with a server seen for the first time (trust on first use): return {@code true} to
 * record it in the known-hosts file and go on, {@code false} to refuse. A program that can ask a
 * person shows them the fingerprint and asks them to check it with the server's operator
 * ({@code velocityd fingerprint}).
 */
@FunctionalInterface
public interface NewHostPolicy {
    /** Refuse every unknown server (the default). */
    NewHostPolicy REFUSE = (hostLabel, fingerprint) -> false;
    /** Record every unknown server and go on. */
    NewHostPolicy ACCEPT = (hostLabel, fingerprint) -> true;

    /**
     * @param hostLabel {@code host:port} ({@code [v6addr]:port}) as the known-hosts file names it
     * @param fingerprint {@code SHA256:…} of the server's public key
     */
    boolean accept(String hostLabel, String fingerprint);
}
