package dev.velocitydb.client;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.cert.Certificate;
import java.security.cert.CertificateEncodingException;
import java.util.Arrays;
import java.util.List;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSocket;
import org.bouncycastle.crypto.generators.Argon2BytesGenerator;
import org.bouncycastle.crypto.params.Argon2Parameters;

/**
 * The Velocity client: {@link #connect(Options)} opens a connection, checks the server's identity
 * and logs in.
 *
 * <pre>{@code
 * try (Connection db = Velocity.connect(new Options().user("alice").password(pw).acceptNewHost(true))) {
 *     db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", "user:1", "alice");
 *     String v = db.execute("SELECT value FROM kv WHERE key = ?", "user:1").scalarText();  // "alice"
 * } catch (KeyNotFoundException e) {
 *     ...
 * }
 * }</pre>
 */
public final class Velocity {
    private Velocity() {
    }

    public static final String VERSION = "0.1.0";
    public static final String CLIENT_NAME = "velocity-java/" + VERSION;
    public static final int DEFAULT_PORT = 7411;

    /**
     * Connects, checks the server's identity (the fingerprint in SERVER_INFO must be the key the
     * TLS handshake presented, then trust on first use) and logs in as {@code options} say.
     *
     * @throws DisconnectedException when the server cannot be reached
     * @throws ProtocolErrorException when TLS is on at one side only (the message says which
     *     option to change), or the server breaks the protocol
     * @throws TrustException when the server's identity is not trusted
     * @throws InvalidCredentialsException when the login is refused
     */
    public static Connection connect(Options options) {
        String host = options.host();
        int port = options.port();
        int timeoutMs = (int) Math.min(Integer.MAX_VALUE, options.timeout().toMillis());
        Socket raw = new Socket();
        try {
            raw.setTcpNoDelay(true);
            raw.connect(new InetSocketAddress(host, port), timeoutMs);
            raw.setSoTimeout(timeoutMs);
        } catch (IOException e) {
            closeQuietly(raw);
            throw new DisconnectedException("cannot connect to " + host + ":" + port + ": " + e.getMessage(), e);
        }
        Socket sock = raw;
        try {
            byte[] certDer = null;
            if (options.tls()) {
                SSLSocket s;
                try {
                    s = (SSLSocket) Tls.context().getSocketFactory().createSocket(raw, host, port, true);
                    sock = s;
                    s.setEnabledProtocols(Tls.PROTOCOLS);
                    s.setUseClientMode(true);
                    s.startHandshake();
                } catch (IOException e) {
                    throw new ProtocolErrorException("TLS handshake with " + host + ":" + port + " failed (" + e.getMessage()
                            + "); if the server was started with --plaintext, connect with tls(false)", e);
                }
                try {
                    Certificate[] chain = s.getSession().getPeerCertificates();
                    certDer = chain[0].getEncoded();
                } catch (SSLPeerUnverifiedException | CertificateEncodingException | ArrayIndexOutOfBoundsException e) {
                    throw new TrustException("the server presented no certificate");
                }
            }
            Connection conn = new Connection(sock, timeoutMs);
            conn.send(Protocol.encodeHello(options.clientName()));
            Frame f;
            try {
                f = conn.recvFrame();
            } catch (FrameException e) {
                if (!options.tls() && e.kind().equals("bad_magic")) {
                    throw new ProtocolErrorException(e.getMessage() + "; if the server uses TLS (the default), connect with tls(true)", e);
                }
                throw e;
            }
            ServerInfo info = acceptServerInfo(conn, f, certDer, options);
            conn.setServerInfo(info);
            byte[] auth = authFrame(conn, info, options);
            if (auth != null) {
                conn.send(auth);
                checkAuthResponse(conn, conn.recvFrame());
                conn.decoder().setPayloadBytesMax(info.maxPayload());
            }
            return conn;
        } catch (IOException e) {
            closeQuietly(sock);
            throw new DisconnectedException("connection to " + host + ":" + port + " lost: " + e.getMessage(), e);
        } catch (RuntimeException | Error e) {
            closeQuietly(sock);
            throw e;
        }
    }

    private static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException e) {
            // nothing more to do
        }
    }

    /** The reply to HELLO, checked: SERVER_INFO from a server we trust, with sane bounds. */
    private static ServerInfo acceptServerInfo(Connection conn, Frame f, byte[] certDer, Options o) {
        if (f.type() != Protocol.SERVER_INFO) {
            Reply r = conn.toReply(f);
            if (r.isError()) {
                throw r.error();
            }
            throw new ProtocolErrorException("expected SERVER_INFO");
        }
        ServerInfo info = Protocol.parseServerInfo(f.payload());
        if (info.version() != Protocol.VERSION) {
            throw new ProtocolErrorException("server chose unsupported protocol version " + info.version());
        }
        if (certDer != null && !MessageDigest.isEqual(Tls.spkiSha256(certDer), info.fingerprint())) {
            throw new TrustException("SERVER_INFO's fingerprint is not the key that the TLS handshake presented: "
                    + "possible man-in-the-middle; refused");
        }
        KnownHosts.check(KnownHosts.hostLabel(o.host(), o.port()), info.fingerprintText(), o.knownHosts(),
                o.newHostPolicy(), o.fingerprint());
        if (info.maxPayload() > Protocol.PAYLOAD_BYTES_CEILING) {
            throw new ProtocolErrorException("server announces max_payload " + info.maxPayload() + ", beyond the protocol's ceiling");
        }
        return info;
    }

    private static byte[] authFrame(Connection conn, ServerInfo info, Options o) {
        if (o.apiKey() != null) {
            byte[] key = Utf8.encode(o.apiKey(), "API key");
            if (key.length > Protocol.CREDENTIAL_BYTES_MAX) {
                throw new UsageException("API key is longer than " + Protocol.CREDENTIAL_BYTES_MAX + " bytes");
            }
            return Protocol.encodeAuthRequest(Protocol.METHOD_API_KEY, "", key);
        }
        String user = o.user();
        byte[] credential = o.credential();
        if (user == null) {
            if (o.password() != null || credential != null) {
                throw new UsageException("a password needs a user");
            }
            return null;
        }
        if (credential == null) {
            if (o.password() == null) {
                throw new UsageException("give a password, a derived credential or an API key");
            }
            credential = deriveCredential(info, user, o.password());
        }
        conn.loginUser = user;
        conn.loginCredential = credential.clone();
        return Protocol.encodeAuthRequest(Protocol.METHOD_PASSWORD, user, credential);
    }

    private static void checkAuthResponse(Connection conn, Frame f) {
        if (f.type() != Protocol.AUTH_RESPONSE) {
            Reply r = conn.toReply(f);
            if (r.isError()) {
                throw r.error();
            }
            throw new ProtocolErrorException("expected AUTH_RESPONSE");
        }
        Protocol.CodeMessage cm = Protocol.parseCodeMessage(f.payload());
        if (cm.code() != 0) {
            throw VelocityException.forCode(cm.code(), cm.message());
        }
    }

    /**
     * The 32-byte method-1 credential: {@code Argon2id(password, SHA-256(auth_salt ‖ user)[0..16],
     * m, t, p, 32)} with the server's cost parameters, refused when they exceed the client's
     * bounds (m 1 GiB, t 16, p 16). Derive it once to open many connections with {@link
     * Options#credential}: it is a password equivalent for this server only.
     */
    public static byte[] deriveCredential(ServerInfo info, String user, String password) {
        byte[] u = Utf8.encode(user, "user name");
        byte[] pw = Utf8.encode(password, "password");
        if (u.length > Protocol.USERNAME_BYTES_MAX) {
            throw new UsageException("user name is longer than " + Protocol.USERNAME_BYTES_MAX + " bytes");
        }
        if (pw.length > Protocol.PASSWORD_BYTES_MAX) {
            throw new UsageException("password is longer than " + Protocol.PASSWORD_BYTES_MAX + " bytes");
        }
        long m = info.argon2MKib();
        long t = info.argon2T();
        int p = info.argon2P();
        if (!(m > 0 && m <= Protocol.ARGON2_M_KIB_MAX && t > 0 && t <= Protocol.ARGON2_T_MAX && p > 0 && p <= Protocol.ARGON2_P_MAX)) {
            throw new ProtocolErrorException("server asks for Argon2id parameters outside the client's bounds: m=" + m
                    + " KiB, t=" + t + ", p=" + p);
        }
        byte[] salt;
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(info.authSalt());
            sha.update(u);
            salt = Arrays.copyOf(sha.digest(), 16);
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError(e);
        }
        Argon2Parameters params = new Argon2Parameters.Builder(Argon2Parameters.ARGON2_id)
                .withVersion(Argon2Parameters.ARGON2_VERSION_13)
                .withSalt(salt)
                .withMemoryAsKB((int) m)
                .withIterations((int) t)
                .withParallelism(p)
                .build();
        Argon2BytesGenerator gen = new Argon2BytesGenerator();
        gen.init(params);
        byte[] out = new byte[32];
        gen.generateBytes(pw, out);
        Arrays.fill(pw, (byte) 0);
        return out;
    }

    /** See {@link Sql#quote}. */
    public static String quote(Object value) {
        return Sql.quote(value);
    }

    /** See {@link Sql#bind(String, List)}. */
    public static String bind(String sql, Object... params) {
        return Sql.bind(sql, params);
    }
}
