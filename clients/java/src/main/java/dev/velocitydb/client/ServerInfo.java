package dev.velocitydb.client;

import java.util.Base64;
import java.util.HexFormat;

/**
 * The SERVER_INFO frame: the chosen protocol version, the server's name, its identity
 * fingerprint, the authentication salt and Argon2id costs, the largest payload, shards and flags.
 */
public record ServerInfo(
        int version,
        String server,
        byte[] fingerprint,
        byte[] authSalt,
        long argon2MKib,
        long argon2T,
        int argon2P,
        long maxPayload,
        int shards,
        int flags) {

    public ServerInfo {
        fingerprint = fingerprint.clone();
        authSalt = authSalt.clone();
    }

    @Override
    public byte[] fingerprint() {
        return fingerprint.clone();
    }

    @Override
    public byte[] authSalt() {
        return authSalt.clone();
    }

    /** Whether the server speaks TLS (flag bit 0). */
    public boolean tls() {
        return (flags & Protocol.FLAG_TLS) != 0;
    }

    /** Whether the server requires a login (flag bit 1). */
    public boolean authRequired() {
        return (flags & Protocol.FLAG_AUTH_REQUIRED) != 0;
    }

    /** {@code SHA256:<base64 without padding>}, as {@code velocityd fingerprint} prints it. */
    public String fingerprintText() {
        return fingerprintString(fingerprint);
    }

    /** The text form of a 32-byte fingerprint: {@code SHA256:} and unpadded standard base64. */
    public static String fingerprintString(byte[] fingerprint) {
        return "SHA256:" + Base64.getEncoder().withoutPadding().encodeToString(fingerprint);
    }

    @Override
    public String toString() {
        return "ServerInfo[version=" + version + ", server=" + server + ", fingerprint=" + fingerprintText()
                + ", authSalt=" + HexFormat.of().formatHex(authSalt) + ", argon2=m" + argon2MKib + "/t" + argon2T
                + "/p" + argon2P + ", maxPayload=" + maxPayload + ", shards=" + shards + ", flags=" + flags + "]";
    }
}
