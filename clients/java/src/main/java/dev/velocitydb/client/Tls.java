package dev.velocitydb.client;

import java.net.Socket;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.cert.X509Certificate;
import java.util.Arrays;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509ExtendedTrustManager;

/**
 * TLS 1.3 only. Certificates are not checked against a CA: the server's identity is its key's
 * fingerprint, checked against SERVER_INFO and the known-hosts file (trust on first use).
 */
final class Tls {
    private Tls() {
    }

    static final String[] PROTOCOLS = {"TLSv1.3"};

    /** Accepts any certificate chain: the key is checked by fingerprint after the handshake. */
    private static final class FingerprintChecked extends X509ExtendedTrustManager {
        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket) {
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine) {
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }

    /**
     * A new context for each connection, as the Python and Node.js clients: no TLS session is
     * resumed, so every connection's handshake presents the key that is then checked.
     */
    static SSLContext context() {
        try {
            SSLContext ctx = SSLContext.getInstance("TLSv1.3");
            ctx.init(null, new TrustManager[] {new FingerprintChecked()}, null);
            return ctx;
        } catch (GeneralSecurityException e) {
            throw new VelocityException("this Java runtime offers no TLS 1.3: " + e.getMessage(), VelocityException.NO_CODE, e);
        }
    }

    /** (tag, start of content, end of element) of the DER element at {@code pos}. */
    private static int[] derElement(byte[] der, int pos) {
        if (pos + 2 > der.length) {
            throw new TrustException("server certificate is truncated");
        }
        int tag = der[pos] & 0xFF;
        int first = der[pos + 1] & 0xFF;
        pos += 2;
        long length;
        if (first < 0x80) {
            length = first;
        } else {
            int n = first & 0x7F;
            if (n == 0 || n > 4 || pos + n > der.length) {
                throw new TrustException("server certificate has an invalid length");
            }
            length = 0;
            for (int i = 0; i < n; i++) {
                length = (length << 8) | (der[pos + i] & 0xFF);
            }
            pos += n;
        }
        if (pos + length > der.length) {
            throw new TrustException("server certificate is truncated");
        }
        return new int[] {tag, pos, (int) (pos + length)};
    }

    /**
     * SHA-256 of the certificate's SubjectPublicKeyInfo, byte for byte as the certificate carries
     * it (the profile's fingerprint).
     *
     * <pre>Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
     *     signature, issuer, validity, subject, subjectPublicKeyInfo, … }, … }</pre>
     */
    static byte[] spkiSha256(byte[] certDer) {
        int certBody = derElement(certDer, 0)[1];
        int pos = derElement(certDer, certBody)[1]; // tbsCertificate content
        int[] e = derElement(certDer, pos);
        if (e[0] == 0xA0) { // explicit version
            pos = e[2];
        }
        for (int i = 0; i < 5; i++) { // serial, signature algorithm, issuer, validity, subject
            pos = derElement(certDer, pos)[2];
        }
        e = derElement(certDer, pos);
        if (e[0] != 0x30) {
            throw new TrustException("server certificate has no SubjectPublicKeyInfo");
        }
        try {
            return MessageDigest.getInstance("SHA-256").digest(Arrays.copyOfRange(certDer, pos, e[2]));
        } catch (NoSuchAlgorithmException ex) {
            throw new AssertionError(ex);
        }
    }
}
