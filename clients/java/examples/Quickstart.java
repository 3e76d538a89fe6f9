/*
 * Connect, write, read back, pipeline, handle a missing key.
 *
 *   VELOCITY_PASSWORD=... java -cp target/classes:$BCPROV examples/Quickstart.java [--plaintext] [--accept-new-host]
 *
 * (BCPROV is the Bouncy Castle jar: /usr/share/java/bcprov.jar from Debian's libbcprov-java, or
 * bcprov-jdk18on from Maven Central.) The server and login come from the environment:
 * VELOCITY_HOST (default 127.0.0.1), VELOCITY_PORT (7411), VELOCITY_USER (admin, the user that
 * scripts/quickstart.sh creates) and VELOCITY_PASSWORD (required: quickstart.sh prints it, or
 * takes it from the same variable).
 */

import dev.velocitydb.client.Connection;
import dev.velocitydb.client.KeyNotFoundException;
import dev.velocitydb.client.Options;
import dev.velocitydb.client.Pipeline;
import dev.velocitydb.client.Row;
import dev.velocitydb.client.Velocity;
import dev.velocitydb.client.VelocityException;
import java.util.Arrays;
import java.util.List;

public class Quickstart {
    private static String env(String name, String fallback) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            System.err.println(name + " is not set: using " + fallback);
            return fallback;
        }
        return v;
    }

    public static void main(String[] args) {
        List<String> flags = Arrays.asList(args);
        String host = env("VELOCITY_HOST", "127.0.0.1");
        String portText = env("VELOCITY_PORT", String.valueOf(Velocity.DEFAULT_PORT));
        String user = env("VELOCITY_USER", "admin");
        String password = System.getenv("VELOCITY_PASSWORD");
        if (password == null || password.isEmpty()) {
            System.err.println("VELOCITY_PASSWORD is not set: give the password of user " + user
                    + " (scripts/quickstart.sh prints the one it made), e.g.\n"
                    + "    VELOCITY_PASSWORD=... java -cp ... examples/Quickstart.java");
            System.exit(2);
        }
        int port;
        try {
            port = Integer.parseInt(portText);
        } catch (NumberFormatException e) {
            System.err.println("VELOCITY_PORT is not a number: " + portText);
            System.exit(2);
            return;
        }
        Options options = new Options()
                .host(host)
                .port(port)
                .user(user)
                .password(password)
                .tls(!flags.contains("--plaintext"))
                .acceptNewHost(flags.contains("--accept-new-host"));
        try (Connection db = Velocity.connect(options)) {
            System.out.println("connected to " + db.serverInfo().server() + " " + db.fingerprint());
            db.execute("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", "greeting", "hello, world", 60);
            System.out.println("greeting = " + db.execute("SELECT value FROM kv WHERE key = ?", "greeting").scalarText());

            Pipeline pipe = db.pipeline();
            for (int i = 0; i < 1000; i++) {
                pipe.add("INSERT INTO kv (key, value) VALUES (?, ?)", String.format("example:%04d", i), "value " + i);
            }
            System.out.println("pipelined " + pipe.run().size() + " inserts");
            for (Row row : db.execute("SELECT key, value FROM kv WHERE key LIKE 'example:%' LIMIT 3")) {
                System.out.println("  " + row.getText("key") + " = " + row.getText("value"));
            }

            try {
                db.execute("SELECT value FROM kv WHERE key = 'no such key'");
            } catch (KeyNotFoundException e) {
                System.out.println("missing key: " + e.getMessage() + " (wire code " + e.code() + ")");
            }
            db.execute("DELETE FROM kv WHERE key LIKE 'example:%'");
        } catch (VelocityException e) {
            System.err.println(e.getMessage());
            System.exit(1);
        }
    }
}
