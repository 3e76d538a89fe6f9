package dev.velocitydb.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/** The language-neutral vectors in tests/vectors/frames.json, byte for byte. */
class VectorsTest {
    static final JsonObject VECTORS;
    static final Map<String, Integer> TYPES = Map.ofEntries(
            Map.entry("HELLO", Protocol.HELLO), Map.entry("SERVER_INFO", Protocol.SERVER_INFO),
            Map.entry("AUTH_REQUEST", Protocol.AUTH_REQUEST), Map.entry("AUTH_RESPONSE", Protocol.AUTH_RESPONSE),
            Map.entry("DISCONNECT", Protocol.DISCONNECT), Map.entry("COMMAND", Protocol.COMMAND),
            Map.entry("RESPONSE", Protocol.RESPONSE), Map.entry("ERROR", Protocol.ERROR), Map.entry("PING", Protocol.PING),
            Map.entry("PONG", Protocol.PONG), Map.entry("STATS", Protocol.STATS));

    static {
        try {
            VECTORS = JsonParser.parseString(Files.readString(Repo.root().resolve("tests/vectors/frames.json"))).getAsJsonObject();
        } catch (IOException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    static byte[] hex(String s) {
        return HexFormat.of().parseHex(s);
    }

    static String hex(byte[] b) {
        return HexFormat.of().formatHex(b);
    }

    static List<JsonObject> list(String name) {
        List<JsonObject> out = new ArrayList<>();
        for (JsonElement e : VECTORS.getAsJsonArray(name)) {
            out.add(e.getAsJsonObject());
        }
        return out;
    }

    static List<JsonObject> frames(String direction) {
        return list("frames").stream().filter(f -> f.get("direction").getAsString().equals(direction)).toList();
    }

    static Object value(JsonObject v) {
        if (v.has("null")) {
            return null;
        }
        if (v.has("int")) {
            return v.get("int").getAsLong();
        }
        return hex(v.get("bytes_hex").getAsString());
    }

    static byte[] encodeClient(JsonObject f) {
        JsonObject m = f.getAsJsonObject("message");
        switch (f.get("type").getAsString()) {
            case "PING":
                return Protocol.encodePing(hex(m.get("payload_hex").getAsString()));
            case "HELLO": {
                JsonArray vs = m.getAsJsonArray("versions");
                int[] versions = new int[vs.size()];
                for (int i = 0; i < versions.length; i++) {
                    versions[i] = vs.get(i).getAsInt();
                }
                return Protocol.encodeHello(m.get("client").getAsString(), versions);
            }
            case "COMMAND":
                return Protocol.encodeCommand(m.get("sql").getAsString());
            case "AUTH_REQUEST":
                return Protocol.encodeAuthRequest(m.get("method").getAsInt(), m.get("username").getAsString(),
                        hex(m.get("credential_hex").getAsString()));
            case "DISCONNECT":
                return Protocol.encodeDisconnect(m.get("code").getAsInt(), m.get("reason").getAsString());
            case "STATS":
                return Protocol.encodeStats();
            default:
                throw new AssertionError(f.get("type"));
        }
    }

    @TestFactory
    Stream<DynamicTest> clientFramesEncodeByteForByte() {
        List<JsonObject> fs = frames("client");
        assertTrue(fs.size() >= 10);
        return fs.stream().map(f -> dynamicTest("encode: " + f.get("name").getAsString(),
                () -> assertEquals(f.get("hex").getAsString(), hex(encodeClient(f)))));
    }

    @TestFactory
    Stream<DynamicTest> serverFramesDecode() {
        List<JsonObject> fs = frames("server");
        assertTrue(fs.size() >= 15);
        return fs.stream().map(f -> dynamicTest("decode: " + f.get("name").getAsString(), () -> decodeServer(f)));
    }

    private static void decodeServer(JsonObject f) {
        FrameDecoder d = new FrameDecoder(1 << 20);
        d.feed(hex(f.get("hex").getAsString()));
        Frame frame = d.next();
        assertNotNull(frame);
        String type = f.get("type").getAsString();
        assertEquals((int) TYPES.get(type), frame.type());
        assertEquals(0, d.buffered());
        JsonObject m = f.getAsJsonObject("message");
        byte[] payload = frame.payload();
        switch (type) {
            case "RESPONSE":
            case "STATS": {
                Result r = Protocol.parseResult(payload);
                List<String> cols = new ArrayList<>();
                m.getAsJsonArray("columns").forEach(c -> cols.add(c.getAsString()));
                assertEquals(cols, r.columns());
                JsonArray rows = m.getAsJsonArray("rows");
                assertEquals(rows.size(), r.size());
                for (int i = 0; i < rows.size(); i++) {
                    JsonArray row = rows.get(i).getAsJsonArray();
                    Object[] expect = new Object[row.size()];
                    for (int c = 0; c < row.size(); c++) {
                        expect[c] = value(row.get(c).getAsJsonObject());
                    }
                    assertEquals(Row.of(expect), r.row(i), "row " + i);
                    for (int c = 0; c < row.size(); c++) {
                        Object got = r.row(i).get(c);
                        if (expect[c] instanceof byte[] b) {
                            assertArrayEquals(b, (byte[]) got);
                        } else {
                            assertEquals(expect[c], got);
                        }
                    }
                }
                assertEquals(m.get("affected").getAsLong(), r.affected());
                break;
            }
            case "ERROR": {
                Protocol.CodeMessage cm = Protocol.parseCodeMessage(payload);
                assertEquals(new Protocol.CodeMessage(m.get("code").getAsInt(), m.get("message").getAsString()), cm);
                VelocityException e = VelocityException.forCode(cm.code(), cm.message());
                assertEquals(cm.code(), e.code());
                assertEquals(cm.message(), e.getMessage());
                assertEquals(cm.code(), e.errorCode().wire());
                break;
            }
            case "AUTH_RESPONSE":
                assertEquals(new Protocol.CodeMessage(m.get("status").getAsInt(), m.get("message").getAsString()),
                        Protocol.parseCodeMessage(payload));
                break;
            case "DISCONNECT":
                assertEquals(new Protocol.CodeMessage(m.get("code").getAsInt(), m.get("reason").getAsString()),
                        Protocol.parseCodeMessage(payload));
                break;
            case "PONG":
                assertEquals(m.get("payload_hex").getAsString(), hex(payload));
                break;
            case "SERVER_INFO": {
                ServerInfo info = Protocol.parseServerInfo(payload);
                assertEquals(m.get("version").getAsInt(), info.version());
                assertEquals(m.get("server").getAsString(), info.server());
                assertEquals(m.get("fingerprint_hex").getAsString(), hex(info.fingerprint()));
                assertEquals(m.get("auth_salt_hex").getAsString(), hex(info.authSalt()));
                assertEquals(m.get("argon2_m_kib").getAsLong(), info.argon2MKib());
                assertEquals(m.get("argon2_t").getAsLong(), info.argon2T());
                assertEquals(m.get("argon2_p").getAsInt(), info.argon2P());
                assertEquals(m.get("max_payload").getAsLong(), info.maxPayload());
                assertEquals(m.get("shards").getAsInt(), info.shards());
                assertEquals(m.get("flags").getAsInt(), info.flags());
                assertTrue(info.tls() == ((info.flags() & 1) != 0));
                break;
            }
            default:
                throw new AssertionError(type);
        }
    }

    @Test
    void framesSplitAtEveryByteAreIncompleteNotErrors() {
        for (JsonObject f : list("frames")) {
            byte[] raw = hex(f.get("hex").getAsString());
            FrameDecoder d = new FrameDecoder(1 << 20);
            for (int i = 0; i < raw.length - 1; i++) {
                d.feed(raw, i, 1);
                assertNull(d.next(), f.get("name") + " at byte " + i);
            }
            d.feed(raw, raw.length - 1, 1);
            assertNotNull(d.next(), f.get("name").getAsString());
        }
    }

    @Test
    void manyFramesInOneBufferComeOutInOrder() {
        List<JsonObject> all = list("frames");
        java.io.ByteArrayOutputStream joined = new java.io.ByteArrayOutputStream();
        for (JsonObject f : all) {
            joined.writeBytes(hex(f.get("hex").getAsString()));
        }
        byte[] raw = joined.toByteArray();
        FrameDecoder d = new FrameDecoder(1 << 20);
        List<Integer> types = new ArrayList<>();
        for (int off = 0; off < raw.length; off += 7) { // odd-sized chunks across frame boundaries
            d.feed(raw, off, Math.min(7, raw.length - off));
            for (Frame fr = d.next(); fr != null; fr = d.next()) {
                types.add(fr.type());
            }
        }
        assertEquals(all.stream().map(f -> TYPES.get(f.get("type").getAsString())).toList(), types);
        assertEquals(0, d.buffered());
    }

    @TestFactory
    Stream<DynamicTest> incomplete() {
        return list("incomplete").stream().map(f -> dynamicTest("incomplete: " + f.get("name").getAsString(), () -> {
            FrameDecoder d = new FrameDecoder();
            d.feed(hex(f.get("hex").getAsString()));
            assertNull(d.next());
        }));
    }

    /**
     * Framing violations are the same on either side; payload rules for frames a client never
     * receives (HELLO, COMMAND, PING, a RESPONSE sent to a server) are the server's concern.
     */
    @TestFactory
    Stream<DynamicTest> invalidFrames() {
        List<String> framing = List.of("bad_magic", "bad_version", "too_long", "bad_checksum", "unknown_type");
        List<JsonObject> fs = list("invalid").stream().filter(f -> framing.contains(f.get("error").getAsString())).toList();
        assertTrue(fs.size() >= 7);
        return fs.stream().map(f -> dynamicTest("invalid: " + f.get("name").getAsString(), () -> {
            FrameDecoder d = new FrameDecoder(f.get("limit").getAsLong());
            d.feed(hex(f.get("hex").getAsString()));
            FrameException e = assertThrows(FrameException.class, d::next);
            assertEquals(f.get("error").getAsString(), e.kind());
            assertEquals(f.get("close").getAsBoolean(), e.fatal());
            assertEquals(0x0006, e.code());
            assertEquals(ErrorCode.PROTOCOL_ERROR, e.errorCode());
        }));
    }

    @Test
    void truncatedAndOversizedResultSetsAreMalformed() {
        byte[] raw = hex(list("frames").get(4).get("hex").getAsString());
        byte[] payload = Arrays.copyOfRange(raw, 10, raw.length - 4);
        assertEquals("alice", Protocol.parseResult(payload).scalarText());
        for (int cut = 0; cut < payload.length; cut++) {
            byte[] p = Arrays.copyOf(payload, cut);
            assertThrows(FrameException.class, () -> Protocol.parseResult(p), "cut at " + cut);
        }
        // A row count far beyond the payload is refused before anything is allocated for it.
        byte[] huge = {1, 0, 1, 0, 'v', (byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff};
        FrameException e = assertThrows(FrameException.class, () -> Protocol.parseResult(huge));
        assertEquals("malformed", e.kind());
    }

    @Test
    void credentialVector() throws Exception {
        JsonObject c = VECTORS.getAsJsonObject("credential");
        ServerInfo info = new ServerInfo(1, "x", new byte[32], hex(c.get("auth_salt_hex").getAsString()),
                c.get("argon2_m_kib").getAsLong(), c.get("argon2_t").getAsLong(), c.get("argon2_p").getAsInt(), 1 << 20, 1, 3);
        byte[] cred = Velocity.deriveCredential(info, c.get("username").getAsString(), c.get("password").getAsString());
        assertEquals(c.get("credential_hex").getAsString(), hex(cred));
        assertEquals(c.get("stored_hex").getAsString(), hex(MessageDigest.getInstance("SHA-256").digest(cred)));
        byte[] salt = Arrays.copyOf(MessageDigest.getInstance("SHA-256").digest(
                (new String(hex(c.get("auth_salt_hex").getAsString()), StandardCharsets.ISO_8859_1) + c.get("username").getAsString())
                        .getBytes(StandardCharsets.ISO_8859_1)), 16);
        assertEquals(c.get("salt_hex").getAsString(), hex(salt));
    }

    @Test
    void hostileArgon2ParametersAreRefused() {
        ServerInfo big = new ServerInfo(1, "x", new byte[32], new byte[16], 1L << 30, 2, 1, 1 << 20, 1, 3);
        assertThrows(ProtocolErrorException.class, () -> Velocity.deriveCredential(big, "alice", "pw"));
        ServerInfo zero = new ServerInfo(1, "x", new byte[32], new byte[16], 19456, 0, 1, 1 << 20, 1, 3);
        assertThrows(ProtocolErrorException.class, () -> Velocity.deriveCredential(zero, "alice", "pw"));
        ServerInfo ok = new ServerInfo(1, "x", new byte[32], new byte[16], 8, 1, 1, 1 << 20, 1, 3);
        assertThrows(UsageException.class, () -> Velocity.deriveCredential(ok, "a".repeat(65), "pw"));
        assertThrows(UsageException.class, () -> Velocity.deriveCredential(ok, "alice", "p".repeat(129)));
    }

    @Test
    void quoteAndBind() {
        assertEquals("'it''s'", Velocity.quote("it's"));
        assertEquals("X'00ff'", Velocity.quote(new byte[] {0, (byte) 0xff}));
        assertEquals("X'" + hex("line\nbreak".getBytes(StandardCharsets.UTF_8)) + "'", Velocity.quote("line\nbreak"));
        assertEquals("'caf\u00e9 \u2713'", Velocity.quote("caf\u00e9 \u2713"));
        assertEquals("'caf\u00e9'", Velocity.quote("caf\u00e9".getBytes(StandardCharsets.UTF_8)));
        assertEquals("X'c3'", Velocity.quote(new byte[] {(byte) 0xc3})); // not UTF-8
        assertEquals("X'" + hex("a\u00a0b".getBytes(StandardCharsets.UTF_8)) + "'", Velocity.quote("a\u00a0b")); // as Python
        assertEquals("X'" + hex("\u200b".getBytes(StandardCharsets.UTF_8)) + "'", Velocity.quote("\u200b")); // Cf
        assertEquals("''", Velocity.quote(""));
        assertEquals("42", Velocity.quote(42));
        assertEquals("42", Velocity.quote(42L));
        assertEquals("18446744073709551615", Velocity.quote(new java.math.BigInteger("18446744073709551615")));
        assertEquals("NULL", Velocity.quote(null));
        assertEquals("SELECT value FROM kv WHERE key = 'a''b' AND key <> '?'",
                Velocity.bind("SELECT value FROM kv WHERE key = ? AND key <> '?'", "a'b"));
        assertEquals("INSERT INTO kv (key, value, ttl) VALUES ('k', X'00', 60)",
                Sql.bind("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", List.of("k", new byte[] {0}, 60)));
        assertThrows(UsageException.class, () -> Sql.bind("SELECT ?", List.of()));
        assertThrows(UsageException.class, () -> Sql.bind("SELECT ?", List.of(1, 2)));
        assertThrows(UsageException.class, () -> Velocity.quote(1.5));
        assertThrows(UsageException.class, () -> Velocity.quote(true));
        assertThrows(UsageException.class, () -> Velocity.quote(-1));
        assertThrows(UsageException.class, () -> Velocity.quote("\ud800")); // an unpaired surrogate has no UTF-8
        assertThrows(UsageException.class, () -> Velocity.quote(new Object()));
    }

    @Test
    void fingerprintStringMatchesTheRustFormat() {
        // SHA256: then unpadded standard base64, as `velocityd fingerprint` prints it.
        assertEquals("SHA256:" + "A".repeat(43), ServerInfo.fingerprintString(new byte[32]));
    }

    @Test
    void errorCodesMapToOneClassEach() {
        Map<Integer, Class<? extends VelocityException>> want = Map.of(
                1, InvalidCredentialsException.class, 2, RateLimitedException.class, 3, InvalidCommandException.class,
                4, KeyNotFoundException.class, 5, StorageErrorException.class, 6, ProtocolErrorException.class,
                7, ServerOverloadedException.class, 8, UnauthorizedException.class,
                9, OutcomeUnknownException.class);
        for (Map.Entry<Integer, Class<? extends VelocityException>> e : want.entrySet()) {
            VelocityException x = VelocityException.forCode(e.getKey(), "m");
            assertEquals(e.getValue(), x.getClass());
            assertEquals((int) e.getKey(), x.code());
            assertEquals(ErrorCode.of(e.getKey()), x.errorCode());
            assertEquals("m", x.getMessage());
        }
        VelocityException unknown = VelocityException.forCode(0x99, "new");
        assertEquals(UnknownServerErrorException.class, unknown.getClass());
        assertEquals(0x99, unknown.code());
        assertNull(unknown.errorCode());
        assertEquals("server error 0x0099: new", unknown.getMessage());
        assertEquals(VelocityException.NO_CODE, new TrustException("x").code());
    }

    @Test
    void outcomeUnknownIsCode9() {
        // An extension for cluster nodes: a write that may or may not have been applied.
        assertEquals(0x0009, ErrorCode.OUTCOME_UNKNOWN.wire());
        assertEquals(ErrorCode.OUTCOME_UNKNOWN, ErrorCode.of(0x0009));
        assertEquals("OUTCOME_UNKNOWN", ErrorCode.of(0x0009).name());
        VelocityException x = VelocityException.forCode(0x0009, "leader lost midway");
        assertEquals(OutcomeUnknownException.class, x.getClass());
        assertEquals(0x0009, x.code());
        assertTrue(x.hasCode());
        assertEquals(ErrorCode.OUTCOME_UNKNOWN, x.errorCode());
        assertEquals("leader lost midway", x.getMessage());
        assertEquals(0x0009, new OutcomeUnknownException("m", new RuntimeException()).code());
    }

    @Test
    void knownHostsFormat() throws IOException {
        java.nio.file.Path dir = Files.createTempDirectory("velocity-java-kh");
        java.nio.file.Path kh = dir.resolve("sub").resolve("known_hosts");
        assertNull(KnownHosts.lookup(kh, "h:1"));
        KnownHosts.record(kh, "h:1", "SHA256:abc");
        Files.writeString(kh, "# comment\nbroken-line\n[::1]:7411 SHA256:v6  \r\n", java.nio.file.StandardOpenOption.APPEND);
        assertEquals("h:1 SHA256:abc\n# comment\nbroken-line\n[::1]:7411 SHA256:v6  \r\n", Files.readString(kh));
        assertEquals("SHA256:abc", KnownHosts.lookup(kh, "h:1"));
        assertEquals("SHA256:v6", KnownHosts.lookup(kh, KnownHosts.hostLabel("::1", 7411)));
        assertNull(KnownHosts.lookup(kh, "h:2"));
        KnownHosts.check("h:1", "SHA256:abc", kh, NewHostPolicy.REFUSE, null);
        TrustException changed = assertThrows(TrustException.class,
                () -> KnownHosts.check("h:1", "SHA256:new", kh, NewHostPolicy.ACCEPT, null));
        assertTrue(changed.getMessage().contains("HAS CHANGED") && changed.getMessage().contains("SHA256:abc"));
        assertThrows(TrustException.class, () -> KnownHosts.check("h:3", "SHA256:x", kh, NewHostPolicy.REFUSE, null));
        KnownHosts.check("h:3", "SHA256:x", kh, NewHostPolicy.ACCEPT, null);
        assertEquals("SHA256:x", KnownHosts.lookup(kh, "h:3"));
        KnownHosts.check("h:1", "SHA256:pinned", kh, NewHostPolicy.REFUSE, "SHA256:pinned");
        assertThrows(TrustException.class, () -> KnownHosts.check("h:1", "SHA256:abc", kh, NewHostPolicy.REFUSE, "SHA256:other"));
        Files.walk(dir).sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    }
}
