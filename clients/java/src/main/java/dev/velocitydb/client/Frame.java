package dev.velocitydb.client;

/** One whole frame: its type (see {@link Protocol}) and its payload. */
public record Frame(int type, byte[] payload) {
}
