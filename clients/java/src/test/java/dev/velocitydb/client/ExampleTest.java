package dev.velocitydb.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bouncycastle.crypto.generators.Argon2BytesGenerator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** examples/Quickstart.java, run as a user would (Java's source launcher) against the real server. */
class ExampleTest {
    @TempDir
    Path tmp;

    record Run(int rc, String out, String err) {
    }

    static Run runExample(Map<String, String> env, Path home, String... flags) throws Exception {
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Path classes = Path.of(Connection.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        Path bc = Path.of(Argon2BytesGenerator.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        Path example = Repo.root().resolve("clients/java/examples/Quickstart.java");
        List<String> cmd = new java.util.ArrayList<>(List.of(java.toString(), "-cp", classes + File.pathSeparator + bc, example.toString()));
        cmd.addAll(List.of(flags));
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().keySet().removeIf(k -> k.startsWith("VELOCITY_"));
        pb.environment().putAll(env);
        pb.environment().put("HOME", home.toString()); // ~/.velocity/known_hosts of its own
        Path err = Files.createTempFile(home, "err", ".txt");
        Process p = pb.redirectError(err.toFile()).start();
        p.getOutputStream().close();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        return new Run(p.waitFor(), out, Files.readString(err));
    }

    @Test
    void quickstartRunsAgainstARealServer() throws Exception {
        Path data = TestServer.newDataDir(tmp);
        try (TestServer s = TestServer.start(data, 1, 0, 0)) {
            Path home = Files.createDirectory(tmp.resolve("home"));
            Map<String, String> env = Map.of("VELOCITY_PORT", String.valueOf(s.port), "VELOCITY_USER", "alice",
                    "VELOCITY_PASSWORD", TestServer.PASSWORD);
            // First contact without --accept-new-host: refused, and it says how to go on.
            Run refused = runExample(env, home);
            assertEquals(1, refused.rc(), refused.toString());
            assertTrue(refused.err().contains("unknown server"), refused.err());
            Run r = runExample(env, home, "--accept-new-host");
            assertEquals(0, r.rc(), r.toString());
            assertTrue(r.err().contains("VELOCITY_HOST is not set: using 127.0.0.1"), r.err());
            assertTrue(r.out().contains("greeting = hello, world"), r.out());
            assertTrue(r.out().contains("pipelined 1000 inserts"), r.out());
            assertTrue(r.out().contains("  example:0000 = value 0"), r.out());
            assertTrue(r.out().contains("missing key: key not found (wire code 4)") || r.out().contains("(wire code 4)"), r.out());
            String fp = TestServer.velocityd(data, "", "fingerprint").strip();
            assertTrue(r.out().contains(fp), r.out());
            // The first contact was recorded in $HOME/.velocity/known_hosts, in the shared format.
            assertEquals("127.0.0.1:" + s.port + " " + fp + "\n", Files.readString(home.resolve(".velocity/known_hosts")));
            assertEquals(0, runExample(env, home).rc()); // known now
            try (Connection db = s.alice()) {
                assertEquals(1L, db.execute("SELECT COUNT(*) FROM kv").scalarLong()); // the greeting
            }
        }
    }

    @Test
    void quickstartSaysWhatIsMissing() throws Exception {
        Run r = runExample(Map.of(), tmp);
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("VELOCITY_PORT is not set: using 7411"), r.err());
        assertTrue(r.err().contains("VELOCITY_USER is not set: using admin"), r.err());
        assertTrue(r.err().contains("VELOCITY_PASSWORD is not set"), r.err());
    }
}
