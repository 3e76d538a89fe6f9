package dev.velocitydb.client;

import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * Trust on first use, as SSH: a known-hosts file holds lines {@code host:port SHA256:<base64>}.
 * An unknown host is refused unless accepted (and then recorded); a changed fingerprint is a hard
 * failure with no bypass. The same file and format as the Rust, Python and Node.js clients and
 * {@code velocity-cli}, so all of them share {@code ~/.velocity/known_hosts}.
 */
public final class KnownHosts {
    private KnownHosts() {
    }

    /** {@code $HOME/.velocity/known_hosts}. */
    public static Path defaultPath() {
        String home = System.getenv("HOME");
        if (home == null || home.isEmpty()) {
            home = System.getProperty("user.home", ".");
        }
        return Path.of(home, ".velocity", "known_hosts");
    }

    /** {@code host:port}, or {@code [host]:port} for an IPv6 address. */
    public static String hostLabel(String host, int port) {
        return host.contains(":") ? "[" + host + "]:" + port : host + ":" + port;
    }

    /** The fingerprint recorded for {@code label}, or {@code null}. */
    public static String lookup(Path file, String label) {
        String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            return null;
        } catch (IOException e) {
            throw new TrustException("cannot read " + file + ": " + e.getMessage());
        }
        for (String line : text.split("\r?\n|\r")) {
            if (line.stripLeading().startsWith("#")) {
                continue;
            }
            int sp = line.indexOf(' ');
            if (sp < 0) {
                continue;
            }
            if (line.substring(0, sp).equals(label)) {
                return line.substring(sp + 1).trim();
            }
        }
        return null;
    }

    /** Appends {@code label fingerprint} to the file, creating it (and its folder) when missing. */
    public static void record(Path file, String label, String fingerprint) {
        try {
            Path dir = file.toAbsolutePath().getParent();
            if (dir != null) {
                Files.createDirectories(dir);
                if (dir.getFileName() != null && dir.getFileName().toString().equals(".velocity")) {
                    try {
                        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx------"));
                    } catch (UnsupportedOperationException e) {
                        // not a POSIX file system: nothing to restrict
                    }
                }
            }
            try (Writer w = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    StandardOpenOption.APPEND, StandardOpenOption.WRITE)) {
                w.write(label + " " + fingerprint + "\n");
            }
        } catch (IOException e) {
            throw new TrustException("cannot write " + file + ": " + e.getMessage());
        }
    }

    static String changedWarning(String label, String known, String now, Path file) {
        return "\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                + "@    WARNING: VELOCITY SERVER IDENTIFICATION HAS CHANGED!  @\n"
                + "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                + "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
                + "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
                + "It is also possible that the server's identity key was replaced.\n"
                + "The fingerprint for " + label + " recorded in " + file + " is\n    " + known + "\n"
                + "and the server now presents\n    " + now + "\n"
                + "Check the new fingerprint with the server's operator (`velocityd fingerprint`), then\n"
                + "remove the old line from " + file + ". The connection was refused.";
    }

    /**
     * Throws {@link TrustException} unless the server presenting {@code fingerprint} is trusted.
     *
     * @param file the known-hosts file, or {@code null} for {@link #defaultPath()}
     * @param newHost asked about a server not in the file; {@code null} refuses
     * @param pinned when given, exactly this fingerprint is accepted, whatever the file says
     */
    public static void check(String label, String fingerprint, Path file, NewHostPolicy newHost, String pinned) {
        if (pinned != null) {
            if (!pinned.equals(fingerprint)) {
                throw new TrustException("server " + label + " presents " + fingerprint + ", not the pinned fingerprint "
                        + pinned + ": refused");
            }
            return;
        }
        Path path = file != null ? file : defaultPath();
        String known = lookup(path, label);
        if (fingerprint.equals(known)) {
            return;
        }
        if (known != null) {
            throw new TrustException(changedWarning(label, known, fingerprint, path));
        }
        boolean accept = newHost != null && newHost.accept(label, fingerprint);
        if (!accept) {
            throw new TrustException("unknown server " + label + " with fingerprint " + fingerprint
                    + ": check it with the server's operator (`velocityd fingerprint`), then connect with "
                    + "acceptNewHost(true) or fingerprint(\"" + fingerprint + "\")");
        }
        record(path, label, fingerprint);
    }
}
