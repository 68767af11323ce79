package io.shmdb.jdbc;

import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Checks what JDBC tools read through {@link DatabaseMetaData} (getTables, getColumns,
 * getPrimaryKeys, getIndexInfo) against a running shmdb, plus a prepared-statement round
 * trip. The Rust test jdbc_metadata.rs starts the database and runs this program with
 * the server's port as its only argument; it prints one line per check and exits non-zero
 * on the first mismatch.
 */
public final class MetadataCheck {
    private MetadataCheck() {}

    private static int checks = 0;

    private static void expect(String what, Object expected, Object actual) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but got <" + actual + ">");
        }
        checks++;
        System.out.println("ok " + what + " = " + actual);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: MetadataCheck <port>");
            System.exit(2);
        }
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/shmdb?user=shmdb&sslmode=disable";
        try (Connection c = DriverManager.getConnection(url)) {
            run(c);
        } catch (AssertionError | SQLException e) {
            System.err.println("FAILED: " + e);
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("all " + checks + " checks passed");
    }

    private static void run(Connection c) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.execute("CREATE TABLE order_line (ol_w_id int, ol_o_id int, ol_number smallint,"
                    + " ol_item varchar(24) NOT NULL, ol_amount numeric(6,2), ol_note text,"
                    + " PRIMARY KEY (ol_w_id, ol_o_id, ol_number))");
            s.execute("CREATE INDEX order_line_item ON order_line (ol_item, ol_amount)");
            s.execute("CREATE TABLE item (i_id int PRIMARY KEY, i_code char(8) NOT NULL, UNIQUE (i_code))");
        }
        DatabaseMetaData md = c.getMetaData();

        List<String> tables = new ArrayList<>();
        try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
            while (rs.next()) {
                tables.add(rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE"));
            }
        }
        expect("getTables", List.of("item:TABLE", "order_line:TABLE"), tables);

        List<String> cols = new ArrayList<>();
        try (ResultSet rs = md.getColumns(null, "public", "order_line", "%")) {
            while (rs.next()) {
                cols.add(rs.getInt("ORDINAL_POSITION") + " " + rs.getString("COLUMN_NAME") + " "
                        + rs.getString("TYPE_NAME") + " " + rs.getInt("DATA_TYPE") + " "
                        + rs.getInt("COLUMN_SIZE") + " " + rs.getInt("DECIMAL_DIGITS") + " "
                        + rs.getString("IS_NULLABLE") + " " + rs.getInt("NULLABLE"));
            }
        }
        expect("getColumns(order_line)", List.of(
                "1 ol_w_id int4 " + Types.INTEGER + " 10 0 NO " + DatabaseMetaData.columnNoNulls,
                "2 ol_o_id int4 " + Types.INTEGER + " 10 0 NO " + DatabaseMetaData.columnNoNulls,
                "3 ol_number int2 " + Types.SMALLINT + " 5 0 NO " + DatabaseMetaData.columnNoNulls,
                "4 ol_item varchar " + Types.VARCHAR + " 24 0 NO " + DatabaseMetaData.columnNoNulls,
                "5 ol_amount numeric " + Types.NUMERIC + " 6 2 YES " + DatabaseMetaData.columnNullable,
                "6 ol_note text " + Types.VARCHAR + " 2147483647 0 YES " + DatabaseMetaData.columnNullable),
                cols);

        List<String> pk = new ArrayList<>();
        try (ResultSet rs = md.getPrimaryKeys(null, "public", "order_line")) {
            while (rs.next()) {
                pk.add(rs.getShort("KEY_SEQ") + " " + rs.getString("COLUMN_NAME") + " " + rs.getString("PK_NAME"));
            }
        }
        expect("getPrimaryKeys(order_line)", List.of(
                "1 ol_w_id order_line_pkey", "2 ol_o_id order_line_pkey", "3 ol_number order_line_pkey"), pk);

        List<String> idx = new ArrayList<>();
        try (ResultSet rs = md.getIndexInfo(null, "public", "order_line", false, false)) {
            while (rs.next()) {
                idx.add(rs.getString("INDEX_NAME") + " " + rs.getBoolean("NON_UNIQUE") + " "
                        + rs.getShort("ORDINAL_POSITION") + " " + rs.getString("COLUMN_NAME") + " "
                        + rs.getString("ASC_OR_DESC"));
            }
        }
        expect("getIndexInfo(order_line)", List.of(
                "order_line_pkey false 1 ol_w_id A",
                "order_line_pkey false 2 ol_o_id A",
                "order_line_pkey false 3 ol_number A",
                "order_line_item true 1 ol_item A",
                "order_line_item true 2 ol_amount A"), idx);

        List<String> unique = new ArrayList<>();
        try (ResultSet rs = md.getIndexInfo(null, "public", "item", true, false)) {
            while (rs.next()) {
                unique.add(rs.getString("INDEX_NAME") + " " + rs.getString("COLUMN_NAME"));
            }
        }
        expect("getIndexInfo(item, unique only)", List.of("item_i_code_key i_code", "item_pkey i_id"), unique);

        try (ResultSet rs = md.getColumns(null, "public", "no_such_table", "%")) {
            expect("getColumns(no_such_table) is empty", false, rs.next());
        }

        // A prepared statement round trip with typed parameters (server-side prepare).
        try (PreparedStatement ins = c.prepareStatement(
                "INSERT INTO order_line VALUES (?, ?, ?, ?, ?, ?)")) {
            ins.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(1);
            for (int n = 1; n <= 3; n++) {
                ins.setInt(1, 1);
                ins.setInt(2, 7);
                ins.setShort(3, (short) n);
                ins.setString(4, "item-" + n);
                ins.setBigDecimal(5, new BigDecimal("1.25").multiply(BigDecimal.valueOf(n)));
                if (n == 2) {
                    ins.setNull(6, Types.VARCHAR);
                } else {
                    ins.setString(6, "note " + n);
                }
                expect("insert row " + n, 1, ins.executeUpdate());
            }
        }
        try (PreparedStatement q = c.prepareStatement(
                "SELECT ol_number, ol_item, ol_amount, ol_note FROM order_line"
                        + " WHERE ol_w_id = ? AND ol_o_id = ? AND ol_amount > ? ORDER BY ol_number")) {
            q.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(1);
            for (int round = 0; round < 2; round++) {
                q.setInt(1, 1);
                q.setInt(2, 7);
                q.setBigDecimal(3, new BigDecimal("1.25"));
                List<String> rows = new ArrayList<>();
                try (ResultSet rs = q.executeQuery()) {
                    while (rs.next()) {
                        rows.add(rs.getShort(1) + " " + rs.getString(2) + " " + rs.getBigDecimal(3) + " "
                                + rs.getString(4));
                    }
                }
                expect("prepared select, round " + round, List.of("2 item-2 2.50 null", "3 item-3 3.75 note 3"), rows);
            }
        }
        try (PreparedStatement dup = c.prepareStatement("INSERT INTO item VALUES (?, ?)")) {
            dup.setInt(1, 1);
            dup.setString(2, "AAAA0001");
            expect("insert item", 1, dup.executeUpdate());
            dup.setInt(1, 2);
            try {
                dup.executeUpdate();
                throw new AssertionError("a duplicate i_code was accepted");
            } catch (SQLException e) {
                expect("duplicate unique value SQLSTATE", "23505", e.getSQLState());
            }
        }
    }
}
