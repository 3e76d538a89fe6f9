package dev.velocitydb.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** End to end against the real velocityd built from this repository, over TLS and plain TCP. */
class EndToEndTest {
    @TempDir
    Path tmp;

    private final List<TestServer> servers = new ArrayList<>();

    @AfterEach
    void stopServers() {
        for (TestServer s : servers) {
            s.stop();
        }
    }

    private TestServer server(int cores, String... extra) throws IOException {
        TestServer s = TestServer.start(tmp, cores, extra);
        servers.add(s);
        return s;
    }

    private TestServer server(String mode) throws IOException {
        return mode.equals("tls") ? server(2) : server(2, "--plaintext");
    }

    private static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"tls", "plaintext"})
    void seedExamplesInOrder(String mode) throws IOException {
        TestServer s = server(mode);
        try (Connection db = s.alice()) {
            KeyNotFoundException missing = assertThrows(KeyNotFoundException.class,
                    () -> db.execute("SELECT value FROM kv WHERE key = 'user:1';"));
            assertEquals(0x0004, missing.code());
            assertEquals(ErrorCode.KEY_NOT_FOUND, missing.errorCode());
            assertEquals(1, db.execute("INSERT INTO kv (key, value) VALUES ('user:1', 'alice');").affected());
            assertArrayEquals(b("alice"), db.execute("SELECT value FROM kv WHERE key = 'user:1';").scalarBytes());
            assertEquals(1, db.execute("UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';").affected());
            assertEquals(List.of(List.of("alice_updated")), db.execute("SELECT value FROM kv WHERE key = 'user:1';").text());
            assertEquals(1, db.execute("DELETE FROM kv WHERE key = 'user:1';").affected());
            assertEquals(0, db.execute("DELETE FROM kv WHERE key = 'user:1';").affected());
            assertThrows(KeyNotFoundException.class, () -> db.execute("UPDATE kv SET value = 'x' WHERE key = 'user:1';"));
            String batch = "INSERT INTO kv (key, value) VALUES \n  ('user:1', 'alice'),\n  ('user:2', 'bob'),\n  ('user:3', 'charlie');";
            assertEquals(3, db.execute(batch).affected());
            Result like = db.execute("SELECT key, value FROM kv WHERE key LIKE 'user:%' LIMIT 100;");
            assertEquals(List.of("key", "value"), like.columns());
            assertEquals(List.of(List.of("user:1", "alice"), List.of("user:2", "bob"), List.of("user:3", "charlie")), like.text());
            assertEquals("bob", like.row(1).getText("value"));
            Result range = db.execute("SELECT key, value FROM kv WHERE key >= 'user:1' AND key <= 'user:9';");
            assertEquals(like.rows(), range.rows());
            Result count = db.execute("SELECT COUNT(*) FROM kv;");
            assertEquals(List.of("count"), count.columns());
            assertEquals(List.of(Row.of(3L)), count.rows());
            assertEquals(3L, count.scalarLong());
            Map<String, Object> stats = db.execute("SHOW STATS;").asMap();
            assertEquals(3L, stats.get("keys"));
            Map<String, Object> status = db.execute("SHOW STATUS;").asMap();
            assertEquals(2L, status.get("shards"));
            assertArrayEquals(b(s.tls ? "TLS 1.3" : "off"), (byte[]) status.get("tls"));
            assertEquals("alice", db.execute("SHOW STATUS;").asTextMap().get("user"));
            assertEquals(s.tls, db.serverInfo().tls());
            assertTrue(db.serverInfo().authRequired());
            assertTrue(db.serverInfo().server().startsWith("velocityd/"));
            assertArrayEquals(b("hi"), db.ping(b("hi")));
            assertArrayEquals(new byte[0], db.ping());
            assertEquals(List.of("name", "value"), db.stats().columns());
        }
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"tls", "plaintext"})
    void pipeliningTenThousandStatements(String mode) throws IOException {
        TestServer s = server(mode);
        try (Connection db = s.alice()) {
            Pipeline ins = db.pipeline();
            for (int i = 0; i < 10_000; i++) {
                ins.add("INSERT INTO kv (key, value) VALUES (?, ?)", String.format("k%05d", i), "v" + i);
            }
            assertEquals(10_000, ins.size());
            List<Result> done = ins.run();
            assertEquals(10_000, done.size());
            assertEquals(0, ins.size());
            assertTrue(done.stream().allMatch(r -> r.affected() == 1));
            Pipeline sel = db.pipeline();
            for (int i = 0; i < 10_000; i++) {
                sel.add("SELECT value FROM kv WHERE key = ?", String.format("k%05d", i));
            }
            sel.add("SELECT value FROM kv WHERE key = 'missing'");
            List<Reply> replies = sel.runReplies();
            assertEquals(10_001, replies.size());
            for (int i = 0; i < 10_000; i++) {
                assertEquals("v" + i, replies.get(i).result().scalarText());
            }
            assertInstanceOf(KeyNotFoundException.class, replies.get(10_000).error());
            // The first error is thrown after every reply was read: the connection stays in step.
            assertThrows(InvalidCommandException.class,
                    () -> db.pipeline().add("SELECT nonsense").add("SELECT COUNT(*) FROM kv").run());
            assertEquals(10_000L, db.execute("SELECT COUNT(*) FROM kv").scalarLong());
        }
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"tls", "plaintext"})
    void userDataCannotEscapeItsLiteral(String mode) throws IOException {
        TestServer s = server(mode);
        List<String> hostile = List.of("'; DELETE FROM kv; --", "it's", "\u0000\u00ff binary", "\n\t", "ключ ✓", "%_\\", "?", "x",
                "a\u00a0b", "\u202e", "");
        try (Connection db = s.alice()) {
            db.execute("INSERT INTO kv (key, value) VALUES ('keep', 'me')");
            for (String h : hostile) {
                db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", h, h);
                assertEquals(List.of(List.of(h)), db.execute("SELECT value FROM kv WHERE key = ?", h).text(), h);
                byte[] raw = new byte[b(h).length + 1];
                System.arraycopy(b(h), 0, raw, 0, raw.length - 1);
                raw[raw.length - 1] = (byte) 0xfe; // not UTF-8
                db.execute("INSERT INTO kv (key, value) VALUES (" + Velocity.quote(raw) + ", " + Velocity.quote(raw) + ")");
                assertArrayEquals(raw, db.execute("SELECT value FROM kv WHERE key = ?", raw).scalarBytes());
            }
            assertArrayEquals(b("me"), db.execute("SELECT value FROM kv WHERE key = 'keep'").scalarBytes());
            assertEquals(1L + 2L * hostile.size(), db.execute("SELECT COUNT(*) FROM kv").scalarLong());
        }
    }

    @Test
    void ttlAndNull() throws IOException {
        TestServer s = server(1);
        try (Connection db = s.alice()) {
            db.execute("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "t", "v", 100);
            db.execute("INSERT INTO kv (key, value) VALUES ('n', 'v')");
            Result r = db.execute("SELECT key, ttl FROM kv WHERE key IN (?, ?)", List.of("t", "n"));
            Map<String, Object> ttl = r.asMap();
            assertNull(ttl.get("n"));
            long t = (Long) ttl.get("t");
            assertTrue(t > 0 && t <= 100, "ttl " + t);
            assertTrue(r.rows().stream().anyMatch(row -> row.isNull(1)));
            db.execute("UPDATE kv SET value = 'w', ttl = NULL WHERE key = 't'");
            assertNull(db.execute("SELECT ttl FROM kv WHERE key = 't'").scalar());
        }
    }

    @Test
    void everyErrorCodeTheClientCanProvoke() throws IOException {
        TestServer s = server(1, "--plaintext", "--rate-limit-conn", "5:5", "--max-connections", "3");
        // INVALID_CREDENTIALS
        InvalidCredentialsException bad = assertThrows(InvalidCredentialsException.class,
                () -> s.connect(o -> o.user("alice").password("wrong")));
        assertEquals(1, bad.code());
        try (Connection db = s.alice()) {
            // INVALID_COMMAND, saying where the problem is
            InvalidCommandException e = assertThrows(InvalidCommandException.class, () -> db.execute("SELECT value FORM kv"));
            assertEquals(3, e.code());
            assertTrue(e.getMessage().contains("FORM"), e.getMessage());
            // KEY_NOT_FOUND
            assertEquals(4, assertThrows(KeyNotFoundException.class,
                    () -> db.execute("UPDATE kv SET value = 'x' WHERE key = 'absent'")).code());
            // PROTOCOL_ERROR: an unknown frame type is answered, and the connection stays open.
            Reply r = db.sendRaw(Protocol.encodeFrame(0x7F, new byte[0]));
            assertInstanceOf(ProtocolErrorException.class, r.error());
            assertEquals(6, r.error().code());
            assertArrayEquals(b("still here"), db.ping(b("still here")));
            // RATE_LIMITED: 5 requests/s with a burst of 5 on this connection.
            Pipeline pipe = db.pipeline();
            for (int i = 0; i < 20; i++) {
                pipe.add("SELECT COUNT(*) FROM kv");
            }
            List<Reply> out = pipe.runReplies();
            assertTrue(out.stream().anyMatch(x -> x.error() instanceof RateLimitedException && x.error().code() == 2), out.toString());
            assertTrue(out.stream().anyMatch(x -> !x.isError()));
        }
        // UNAUTHORIZED: a read-only user writing, and a command before logging in.
        try (Connection ro = s.connect(o -> o.user("reader").password(TestServer.RO_PASSWORD))) {
            UnauthorizedException e = assertThrows(UnauthorizedException.class,
                    () -> ro.execute("INSERT INTO kv (key, value) VALUES ('a', 'b')"));
            assertEquals(8, e.code());
        }
        try (Connection anon = s.connect()) {
            assertThrows(UnauthorizedException.class, () -> anon.execute("SELECT COUNT(*) FROM kv"));
            assertThrows(UnauthorizedException.class, anon::stats);
        }
        // SERVER_OVERLOADED: beyond --max-connections.
        List<Connection> held = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            held.add(s.alice());
        }
        ServerOverloadedException over = assertThrows(ServerOverloadedException.class, s::alice);
        assertEquals(7, over.code());
        held.forEach(Connection::close);
        // A framing violation is answered with PROTOCOL_ERROR, then the server closes.
        TestServer.sleep(200);
        try (Connection db = s.alice()) {
            byte[] bad4 = new byte[14];
            System.arraycopy(b("VELX"), 0, bad4, 0, 4);
            Reply r = db.sendRaw(bad4);
            assertInstanceOf(ProtocolErrorException.class, r.error());
            assertThrows(DisconnectedException.class, db::ping);
            assertTrue(db.isClosed());
            assertThrows(DisconnectedException.class, () -> db.execute("SELECT COUNT(*) FROM kv"));
        }
    }

    @Test
    void storageErrorWhenTheDiskIsFull() throws IOException {
        // A file-size limit stands in for a full disk: the write that does not fit is refused
        // with STORAGE_ERROR and is not applied.
        TestServer s = TestServer.start(TestServer.newDataDir(tmp), 1, 0, 24 * 1024, "--plaintext", "--audit", "off");
        servers.add(s);
        try (Connection db = s.alice()) {
            int refused = -1;
            for (int i = 0; i < 1000 && refused < 0; i++) {
                try {
                    db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", "k" + i, "v".repeat(200));
                } catch (StorageErrorException e) {
                    assertEquals(5, e.code());
                    refused = i;
                }
            }
            assertTrue(refused > 0, "no write was refused");
            assertEquals((long) refused, db.execute("SELECT COUNT(*) FROM kv").scalarLong());
            String key = "k" + refused;
            assertThrows(KeyNotFoundException.class, () -> db.execute("SELECT value FROM kv WHERE key = ?", key));
        }
    }

    @Test
    void apiKeyLogin() throws IOException {
        // Waiting for the key file to be reloaded means failed logins; throttling is tested in Rust.
        TestServer s = server(1, "--login-fail-threshold", "0");
        String key = TestServer.velocityd(s.dataDir, "", "apikey", "create", "--user", "alice").strip();
        Connection db = null;
        for (int i = 0; i < 50 && db == null; i++) { // the server picks up a new key within a second
            try {
                db = s.connect(o -> o.apiKey(key));
            } catch (InvalidCredentialsException e) {
                TestServer.sleep(100);
            }
        }
        try (Connection c = db) {
            assertEquals("alice", c.execute("SHOW STATUS").asTextMap().get("user"));
        }
        assertThrows(InvalidCredentialsException.class, () -> s.connect(o -> o.apiKey("vk_00000000_nope")));
    }

    @Test
    void loginOptionsAreChecked() throws IOException {
        TestServer s = server(1);
        assertThrows(UsageException.class, () -> s.connect(o -> o.password("pw")));
        assertThrows(UsageException.class, () -> s.connect(o -> o.user("alice")));
        assertThrows(UsageException.class, () -> s.connect(o -> o.apiKey("k".repeat(129))));
        // A credential derived once opens further connections without Argon2id.
        byte[] cred;
        try (Connection anon = s.connect()) {
            cred = Velocity.deriveCredential(anon.serverInfo(), "alice", TestServer.PASSWORD);
        }
        try (Connection db = s.connect(o -> o.user("alice").credential(cred))) {
            assertEquals("alice", db.execute("SHOW STATUS").asTextMap().get("user"));
            // A statement beyond max_payload is refused before it is sent.
            String big = "x".repeat((int) db.serverInfo().maxPayload());
            assertThrows(UsageException.class, () -> db.execute("SELECT value FROM kv WHERE key = ?", big));
            assertThrows(UsageException.class, () -> db.ping(new byte[65]));
            assertThrows(UsageException.class, () -> db.execute("SELECT value FROM kv WHERE key = ?"  , List.of()));
            assertEquals(0L, db.execute("SELECT COUNT(*) FROM kv").scalarLong());
        }
    }

    @Test
    void trustOnFirstUseAndAChangedKey() throws IOException, InterruptedException {
        TestServer s = server(1);
        Path kh = tmp.resolve("kh").resolve("known_hosts");
        TrustException unknown = assertThrows(TrustException.class, () -> s.connect(o -> o.knownHosts(kh).acceptNewHost(false)));
        assertTrue(unknown.getMessage().contains("unknown server"), unknown.getMessage());
        assertFalse(Files.exists(kh));
        List<String[]> asked = new ArrayList<>();
        assertThrows(TrustException.class, () -> s.connect(o -> o.knownHosts(kh).onNewHost((h, fp) -> {
            asked.add(new String[] {h, fp});
            return false;
        })));
        assertEquals(1, asked.size());
        assertEquals("127.0.0.1:" + s.port, asked.get(0)[0]);
        assertTrue(asked.get(0)[1].startsWith("SHA256:"));
        assertFalse(Files.exists(kh));
        String fp;
        try (Connection db = s.connect(o -> o.knownHosts(kh).acceptNewHost(true).user("alice").password(TestServer.PASSWORD))) {
            fp = db.fingerprint();
        }
        String line = Files.readString(kh);
        assertEquals("127.0.0.1:" + s.port + " " + fp + "\n", line);
        // The operator's command prints the same fingerprint.
        assertEquals(fp, TestServer.velocityd(s.dataDir, "", "fingerprint").strip());
        s.connect(o -> o.knownHosts(kh).acceptNewHost(false)).close();
        // Pinning.
        s.connect(o -> o.knownHosts(tmp.resolve("other")).fingerprint(fp)).close();
        TrustException pinned = assertThrows(TrustException.class,
                () -> s.connect(o -> o.knownHosts(tmp.resolve("other")).fingerprint("SHA256:" + "A".repeat(43))));
        assertTrue(pinned.getMessage().contains("pinned"), pinned.getMessage());
        // The Rust CLI trusts the file the Java client wrote.
        TestServer.run(TestServer.PASSWORD, List.of(TestServer.bin("velocity-cli").toString(), "--port", String.valueOf(s.port),
                "-u", "alice", "--password-stdin", "--known-hosts", kh.toString(), "-c", "SHOW STATUS"));
        // Another server (another identity key) on the same port: refused loudly, even when new
        // hosts are accepted, and the file is left alone.
        int port = s.port;
        s.stop();
        TestServer s2 = TestServer.start(TestServer.newDataDir(tmp), 1, port, 0);
        servers.add(s2);
        TrustException changed = assertThrows(TrustException.class,
                () -> s2.connect(o -> o.knownHosts(kh).acceptNewHost(true)));
        assertTrue(changed.getMessage().contains("HAS CHANGED"), changed.getMessage());
        assertTrue(changed.getMessage().contains(fp));
        assertEquals(line, Files.readString(kh));
    }

    @Test
    void tlsAndPlaintextMismatchGiveClearErrors() throws IOException {
        TestServer tls = server(1);
        TestServer plain = server(1, "--plaintext");
        ProtocolErrorException a = assertThrows(ProtocolErrorException.class, () -> tls.connect(o -> o.tls(false)));
        assertTrue(a.getMessage().contains("tls(true)"), a.getMessage());
        ProtocolErrorException b = assertThrows(ProtocolErrorException.class, () -> plain.connect(o -> o.tls(true)));
        assertTrue(b.getMessage().contains("tls(false)"), b.getMessage());
    }

    @Test
    void overloadOverTlsAndShutdownAreReported() throws IOException {
        TestServer s = server(1, "--max-connections", "2");
        try (Connection a = s.alice(); Connection b = s.alice()) {
            ServerOverloadedException over = assertThrows(ServerOverloadedException.class, s::alice);
            assertEquals(7, over.code());
            // SIGTERM: the server says DISCONNECT to its clients, and they say why.
            s.stop();
            DisconnectedException gone = assertThrows(DisconnectedException.class, a::ping);
            assertTrue(a.isClosed());
            assertTrue(gone.getMessage().startsWith("server disconnected: "), gone.getMessage());
            assertFalse(gone.reason().isEmpty());
            assertEquals(0, gone.disconnectCode());
            assertThrows(DisconnectedException.class, () -> b.execute("SELECT COUNT(*) FROM kv"));
        }
    }

    @Test
    void nobodyListening() {
        int port = TestServer.freePort();
        assertThrows(DisconnectedException.class, () -> Velocity.connect(new Options().port(port)));
    }
}
