package dev.velocitydb.client;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A result set: {@link #columns()}, {@link #rows()} and {@link #affected()} (rows written by
 * INSERT, UPDATE or DELETE; 0 for reads). Iterable over its rows.
 */
public final class Result implements Iterable<Row> {
    private final List<String> columns;
    private final List<Row> rows;
    private final long affected;

    Result(List<String> columns, List<Row> rows, long affected) {
        this.columns = Collections.unmodifiableList(columns);
        this.rows = Collections.unmodifiableList(rows);
        this.affected = affected;
    }

    public List<String> columns() {
        return columns;
    }

    public List<Row> rows() {
        return rows;
    }

    /** Rows written (an unsigned count; it never comes near 2^63 in practice). */
    public long affected() {
        return affected;
    }

    public int size() {
        return rows.size();
    }

    public boolean isEmpty() {
        return rows.isEmpty();
    }

    public Row row(int i) {
        return rows.get(i);
    }

    @Override
    public Iterator<Row> iterator() {
        return rows.iterator();
    }

    /** The single value of a one-row, one-column result ({@code SELECT value … WHERE key = …}). */
    public Object scalar() {
        return one().get(0);
    }

    public byte[] scalarBytes() {
        return one().getBytes(0);
    }

    public String scalarText() {
        return one().getText(0);
    }

    public Long scalarLong() {
        return one().getLong(0);
    }

    private Row one() {
        if (rows.size() != 1 || columns.size() != 1) {
            throw new IllegalStateException("expected one value, got " + rows.size() + " rows of " + columns.size() + " columns");
        }
        return rows.get(0);
    }

    /** Every row with BYTES decoded as UTF-8 (see {@link Row#text()}). */
    public List<List<Object>> text() {
        List<List<Object>> out = new ArrayList<>(rows.size());
        for (Row r : rows) {
            out.add(r.text());
        }
        return out;
    }

    /**
     * {@code {name: value}} for two-column results such as SHOW STATS, SHOW STATUS, STATS and
     * {@code key, value}: the first column as text, the second raw (byte[], Long or null).
     */
    public Map<String, Object> asMap() {
        Map<String, Object> out = new LinkedHashMap<>();
        for (Row r : rows) {
            out.put(r.getText(0), r.get(1));
        }
        return out;
    }

    /** As {@link #asMap()}, with the values as text too. */
    public Map<String, String> asTextMap() {
        Map<String, String> out = new LinkedHashMap<>();
        for (Row r : rows) {
            out.put(r.getText(0), r.getText(1));
        }
        return out;
    }

    @Override
    public String toString() {
        return "Result[columns=" + columns + ", rows=" + rows + ", affected=" + affected + "]";
    }
}
