package dev.velocitydb.client;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;
import java.util.stream.Stream;

/**
 * Starts the real {@code velocityd} built from this repository on a free loopback port, with a
 * fresh data directory and two users (alice: readwrite, reader: readonly), as the Python suite's
 * conftest.py does. The binary is {@code $VELOCITYD}, else {@code target/release/velocityd}
 * (built with cargo when missing).
 */
final class TestServer implements AutoCloseable {
    static final String PASSWORD = "correct horse battery staple";
    static final String RO_PASSWORD = "read only please";

    final Path dataDir;
    final Path knownHosts;
    final Path log;
    final boolean tls;
    int port;
    private Process proc;

    static synchronized Path bin(String name) {
        String explicit = System.getenv("VELOCITYD");
        if (explicit != null && !explicit.isEmpty()) {
            Path d = Path.of(explicit);
            if (name.equals("velocityd")) {
                return d;
            }
            Path sibling = d.toAbsolutePath().resolveSibling(name);
            if (Files.isExecutable(sibling)) {
                return sibling;
            }
        }
        Path p = Repo.root().resolve("target").resolve("release").resolve(name);
        if (!Files.isExecutable(p)) {
            cargoBuild(name);
        }
        return p;
    }

    /** {@code cargo build --release --locked --bin NAME} in the repository, as conftest.py does. */
    private static void cargoBuild(String name) {
        try {
            Process p = new ProcessBuilder("cargo", "build", "--release", "--locked", "--bin", name)
                    .directory(Repo.root().toFile()).inheritIO().start();
            if (p.waitFor() != 0) {
                throw new AssertionError("cargo build --bin " + name + " failed");
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    /** Runs a command to its end, {@code stdin} as its input; its stdout, or an assertion error with its stderr. */
    static String run(String stdin, List<String> cmd) {
        try {
            Path err = Files.createTempFile("velocity-java-", ".err");
            Process p = new ProcessBuilder(cmd).redirectError(err.toFile()).start();
            p.getOutputStream().write(stdin.getBytes(StandardCharsets.UTF_8));
            p.getOutputStream().close();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            int rc = p.waitFor();
            String stderr = Files.readString(err);
            Files.deleteIfExists(err);
            if (rc != 0) {
                throw new AssertionError(String.join(" ", cmd) + " exited " + rc + ":\n" + stderr);
            }
            return out;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    /** {@code velocityd ARGS --data-dir DIR}, e.g. {@code user add}, {@code fingerprint}. */
    static String velocityd(Path dataDir, String stdin, String... args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(bin("velocityd").toString());
        cmd.addAll(List.of(args));
        cmd.add("--data-dir");
        cmd.add(dataDir.toString());
        return run(stdin, cmd);
    }

    static int freePort() {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A new data directory under {@code parent} with the users alice and reader. */
    static Path newDataDir(Path parent) throws IOException {
        Path d = Files.createTempDirectory(parent, "data");
        velocityd(d, PASSWORD, "user", "add", "alice", "--role", "readwrite", "--password-stdin");
        velocityd(d, RO_PASSWORD, "user", "add", "reader", "--role", "readonly", "--password-stdin");
        return d;
    }

    static TestServer start(Path parent, int cores, String... extra) throws IOException {
        return start(newDataDir(parent), cores, 0, 0, extra);
    }

    /**
     * @param port 0 for a free one
     * @param fsizeBytes when not 0, a file-size limit (RLIMIT_FSIZE) that stands in for a full disk
     */
    static TestServer start(Path dataDir, int cores, int port, long fsizeBytes, String... extra) throws IOException {
        return new TestServer(dataDir, cores, port, fsizeBytes, extra);
    }

    private TestServer(Path dataDir, int cores, int fixedPort, long fsizeBytes, String... extra) throws IOException {
        this.dataDir = dataDir;
        this.tls = !List.of(extra).contains("--plaintext");
        this.knownHosts = dataDir.resolveSibling(dataDir.getFileName() + ".known_hosts");
        this.log = dataDir.resolveSibling(dataDir.getFileName() + ".log");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (true) {
            port = fixedPort != 0 ? fixedPort : freePort();
            List<String> cmd = new ArrayList<>();
            if (fsizeBytes != 0) {
                // The shell's ulimit counts 512-byte blocks; exec keeps velocityd's pid ours.
                cmd.addAll(List.of("sh", "-c", "ulimit -f " + (fsizeBytes / 512) + "; exec \"$0\" \"$@\""));
            }
            cmd.addAll(List.of(bin("velocityd").toString(), "--listen", "127.0.0.1:" + port, "--cores",
                    String.valueOf(cores), "--data-dir", dataDir.toString()));
            cmd.addAll(List.of(extra));
            proc = new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.DISCARD)
                    .redirectError(log.toFile()).start();
            while (System.nanoTime() < deadline && proc.isAlive()) {
                try (Socket s = new Socket()) {
                    s.connect(new InetSocketAddress("127.0.0.1", port), 1000);
                    return;
                } catch (IOException e) {
                    sleep(20);
                }
            }
            if (System.nanoTime() >= deadline) {
                proc.destroyForcibly();
                throw new AssertionError("velocityd did not start:\n" + Files.readString(log));
            }
            // it exited: the port was taken, or a start-up error; try again
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    /** Options for this server: its TLS setting, its own known-hosts file, new hosts accepted. */
    Options options() {
        return new Options().port(port).tls(tls).knownHosts(knownHosts).acceptNewHost(true);
    }

    Connection connect(UnaryOperator<Options> change) {
        return Velocity.connect(change.apply(options()));
    }

    Connection connect() {
        return connect(o -> o);
    }

    Connection alice() {
        return connect(o -> o.user("alice").password(PASSWORD));
    }

    /** SIGTERM, then up to 15 s for a clean exit (it says DISCONNECT to its clients). */
    void stop() {
        if (proc.isAlive()) {
            proc.destroy();
            try {
                if (!proc.waitFor(15, TimeUnit.SECONDS)) {
                    proc.destroyForcibly().waitFor();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    String log() throws IOException {
        return Files.readString(log);
    }

    @Override
    public void close() {
        stop();
    }

    static void deleteTree(Path dir) {
        if (dir == null || !Files.exists(dir)) {
            return;
        }
        try (Stream<Path> s = Files.walk(dir)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            // best effort
        }
    }
}
