package dev.velocitydb.client;

import java.nio.file.Path;
import java.time.Duration;

/**
 * Where and how to connect, for {@link Velocity#connect(Options)}. Fluent setters; every one has
 * a default:
 *
 * <pre>{@code
 * Options o = new Options().host("db.example").port(7411).user("alice").password(pw);
 * }</pre>
 *
 * <ul>
 *   <li>{@code host} 127.0.0.1, {@code port} 7411.
 *   <li>Login: {@code user} + {@code password} (Argon2id is derived here: the password never
 *       leaves the process), or {@code user} + a {@code credential} from
 *       {@link Velocity#deriveCredential}, or an {@code apiKey}. With none of them the connection
 *       is made but not logged in (requests get {@link UnauthorizedException}).
 *   <li>{@code tls} true: TLS 1.3. {@code tls(false)} for a server started with
 *       {@code --plaintext}.
 *   <li>Trust on first use: {@code knownHosts} (default {@code ~/.velocity/known_hosts});
 *       {@code acceptNewHost(true)} records a server seen for the first time, or
 *       {@code onNewHost(policy)} asks; {@code fingerprint("SHA256:…")} accepts exactly that key.
 *   <li>{@code timeout} 30 s, for connecting and for each wait for the server.
 * </ul>
 */
public final class Options {
    private String host = "127.0.0.1";
    private int port = Velocity.DEFAULT_PORT;
    private String user;
    private String password;
    private String apiKey;
    private byte[] credential;
    private boolean tls = true;
    private Path knownHosts;
    private NewHostPolicy newHost = NewHostPolicy.REFUSE;
    private String fingerprint;
    private Duration timeout = Duration.ofSeconds(30);
    private String clientName = Velocity.CLIENT_NAME;

    public Options() {
    }

    /** A copy, for changing one setting without touching the original. */
    public Options copy() {
        Options o = new Options();
        o.host = host;
        o.port = port;
        o.user = user;
        o.password = password;
        o.apiKey = apiKey;
        o.credential = credential == null ? null : credential.clone();
        o.tls = tls;
        o.knownHosts = knownHosts;
        o.newHost = newHost;
        o.fingerprint = fingerprint;
        o.timeout = timeout;
        o.clientName = clientName;
        return o;
    }

    public Options host(String host) {
        this.host = host;
        return this;
    }

    public Options port(int port) {
        if (port <= 0 || port > 65535) {
            throw new UsageException("port " + port + " is out of range");
        }
        this.port = port;
        return this;
    }

    public Options user(String user) {
        this.user = user;
        return this;
    }

    public Options password(String password) {
        this.password = password;
        return this;
    }

    /** Log in with an API key (authentication method 2) instead of a user and password. */
    public Options apiKey(String apiKey) {
        this.apiKey = apiKey;
        return this;
    }

    /** The 32-byte credential from {@link Velocity#deriveCredential}, instead of the password. */
    public Options credential(byte[] credential) {
        this.credential = credential == null ? null : credential.clone();
        return this;
    }

    public Options tls(boolean tls) {
        this.tls = tls;
        return this;
    }

    public Options knownHosts(Path knownHosts) {
        this.knownHosts = knownHosts;
        return this;
    }

    /** {@code true}: record a server seen for the first time and go on; {@code false}: refuse it. */
    public Options acceptNewHost(boolean accept) {
        this.newHost = accept ? NewHostPolicy.ACCEPT : NewHostPolicy.REFUSE;
        return this;
    }

    /** Ask {@code policy} about a server seen for the first time. */
    public Options onNewHost(NewHostPolicy policy) {
        this.newHost = policy == null ? NewHostPolicy.REFUSE : policy;
        return this;
    }

    /** Accept exactly the server whose key has this fingerprint ({@code SHA256:…}). */
    public Options fingerprint(String fingerprint) {
        this.fingerprint = fingerprint;
        return this;
    }

    public Options timeout(Duration timeout) {
        if (timeout.isNegative()) {
            throw new UsageException("a negative timeout");
        }
        this.timeout = timeout;
        return this;
    }

    /** The name sent in HELLO, for the server's logs. */
    public Options clientName(String clientName) {
        this.clientName = clientName;
        return this;
    }

    public String host() {
        return host;
    }

    public int port() {
        return port;
    }

    public String user() {
        return user;
    }

    String password() {
        return password;
    }

    String apiKey() {
        return apiKey;
    }

    byte[] credential() {
        return credential == null ? null : credential.clone();
    }

    public boolean tls() {
        return tls;
    }

    public Path knownHosts() {
        return knownHosts;
    }

    public NewHostPolicy newHostPolicy() {
        return newHost;
    }

    public String fingerprint() {
        return fingerprint;
    }

    public Duration timeout() {
        return timeout;
    }

    public String clientName() {
        return clientName;
    }

    /** Never shows the password, credential or API key. */
    @Override
    public String toString() {
        return "Options[" + KnownHosts.hostLabel(host, port) + (tls ? ", TLS" : ", plaintext")
                + (apiKey != null ? ", API key" : user != null ? ", user " + user : ", no login") + "]";
    }
}
