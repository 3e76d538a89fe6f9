package dev.velocitydb.client;

import java.nio.file.Files;
import java.nio.file.Path;

/** The repository's root: where tests/vectors and the Rust sources are. */
final class Repo {
    private Repo() {
    }

    static Path root() {
        String prop = System.getProperty("velocity.repo");
        if (prop != null && Files.exists(Path.of(prop, "tests", "vectors", "frames.json"))) {
            return Path.of(prop).toAbsolutePath().normalize();
        }
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.exists(p.resolve("tests").resolve("vectors").resolve("frames.json"))) {
                return p;
            }
        }
        throw new IllegalStateException("cannot find the repository root (tests/vectors/frames.json) above "
                + Path.of("").toAbsolutePath());
    }
}
