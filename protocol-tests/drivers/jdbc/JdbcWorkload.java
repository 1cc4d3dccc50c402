// pgjdbc through pgmux. Run by protocol-tests/drivers.rs:
//   javac -cp /usr/share/java/postgresql.jar -d OUT JdbcWorkload.java
//   java -cp /usr/share/java/postgresql.jar:OUT JdbcWorkload [thresholds, default 0,1,5 | --version]
// Connection settings from PGMUX_HOST, PGMUX_PORT, PGMUX_USER, PGMUX_PASSWORD, PGMUX_DB.
//
// For each prepareThreshold, several threads each open a connection with autocommit off
// and run many transactions with explicit commits (and some rollbacks), reusing the same
// PreparedStatement objects: pgjdbc server-prepares a statement (S_1, S_2, ...) once it
// has run prepareThreshold times, and its own BEGIN too after a few transactions. Each
// thread first uses its statements in a different order, so S_n is different SQL on
// different connections. prepareThreshold=0 never server-prepares (a control). Then each
// thread writes with autocommit on: INSERTs with parameters and batches outside any
// transaction, read back on the primary.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

public class JdbcWorkload {
    static final int THREADS = 4;
    static final int TXNS = 40;
    static final String TABLE = "drv_jdbc";

    static final String HOST = env("PGMUX_HOST", "127.0.0.1");
    static final String PORT = env("PGMUX_PORT", "6432");
    static final String USER = env("PGMUX_USER", "app");
    static final String PASSWORD = env("PGMUX_PASSWORD", "app");
    static final String DB = env("PGMUX_DB", "app");
    static final boolean EXPECT_SPREAD = "1".equals(System.getenv("PGMUX_EXPECT_SPREAD"));

    static final AtomicLong queries = new AtomicLong();
    static final List<String> failures = Collections.synchronizedList(new ArrayList<>());
    static final Map<String, Set<Integer>> pids = new HashMap<>();

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static Connection connect(int threshold) throws SQLException {
        String url = "jdbc:postgresql://" + HOST + ":" + PORT + "/" + DB
                + "?prepareThreshold=" + threshold
                + "&sslmode=disable&ApplicationName=drv_jdbc&connectTimeout=10&socketTimeout=120";
        return DriverManager.getConnection(url, USER, PASSWORD);
    }

    static class WrongResult extends RuntimeException {
        WrongResult(String m) { super(m); }
    }

    static void expect(Object got, Object want, String what) {
        if (!String.valueOf(got).equals(String.valueOf(want))) {
            throw new WrongResult(what + ": got " + got + ", expected " + want);
        }
    }

    static void sawPid(String client, int pid) {
        synchronized (pids) {
            pids.computeIfAbsent(client, k -> new HashSet<>()).add(pid);
        }
    }

    /** One query of the workload: a reused PreparedStatement, its parameters and check. */
    interface Query {
        void run(PreparedStatement ps, String client, String label, int t, int i) throws SQLException;
    }

    static final String[] SQL = {
        "select ?::int8 + ?::int8, pg_backend_pid()",
        "select ?::text || '@' || ?::text, pg_backend_pid()",
        "select count(*), pg_backend_pid() from generate_series(1, ?::int4)",
        "select ?::int4 % 3 = 0, ?::numeric * 2, pg_backend_pid()",
    };

    static final Query[] RUN = {
        (ps, client, label, t, i) -> {
            ps.setLong(1, t * 100000L + i);
            ps.setLong(2, 11);
            check(ps, client, label + ": add", rs -> expect(rs.getLong(1), t * 100000L + i + 11, label + ": add"));
        },
        (ps, client, label, t, i) -> {
            ps.setString(1, "t" + t);
            ps.setString(2, "i" + i);
            check(ps, client, label + ": concat", rs -> expect(rs.getString(1), "t" + t + "@i" + i, label + ": concat"));
        },
        (ps, client, label, t, i) -> {
            int n = (t * 5 + i) % 40 + 1;
            ps.setInt(1, n);
            check(ps, client, label + ": count", rs -> expect(rs.getLong(1), n, label + ": count"));
        },
        (ps, client, label, t, i) -> {
            ps.setInt(1, i);
            ps.setBigDecimal(2, new java.math.BigDecimal(t + "." + i));
            check(ps, client, label + ": bool/numeric", rs -> {
                expect(rs.getBoolean(1), i % 3 == 0, label + ": bool");
                expect(rs.getBigDecimal(2).stripTrailingZeros().toPlainString(),
                        new java.math.BigDecimal(t + "." + i).multiply(java.math.BigDecimal.valueOf(2)).stripTrailingZeros().toPlainString(),
                        label + ": numeric");
            });
        },
    };

    interface RowCheck {
        void check(ResultSet rs) throws SQLException;
    }

    static void check(PreparedStatement ps, String client, String label, RowCheck c) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            if (!rs.next()) throw new WrongResult(label + ": no row");
            c.check(rs);
            sawPid(client, rs.getInt(rs.getMetaData().getColumnCount()));
            if (rs.next()) throw new WrongResult(label + ": more than one row");
        }
        queries.incrementAndGet();
    }

    static void worker(int threshold, int t) throws SQLException {
        String client = "threshold " + threshold + " thread " + t;
        try (Connection conn = connect(threshold)) {
            conn.setAutoCommit(false);
            int n = SQL.length;
            // Prepared once, reused in every transaction; first used in a per-thread order.
            int[] order = new int[n];
            for (int k = 0; k < n; k++) order[k] = (k + t) % n;
            PreparedStatement[] ps = new PreparedStatement[n];
            for (int k = 0; k < n; k++) ps[k] = conn.prepareStatement(SQL[k]);
            PreparedStatement ins = conn.prepareStatement(
                    "insert into " + TABLE + " (threshold, thread, i) values (?, ?, ?)");
            int expectRows = 0;
            long expectSum = 0;
            for (int i = 0; i < TXNS; i++) {
                String label = client + " txn " + i;
                for (int k : order) RUN[k].run(ps[k], client, label, t, i);
                if (i % 5 == 4) {
                    // A batch of inserts.
                    for (int b = 0; b < 3; b++) {
                        ins.setInt(1, threshold);
                        ins.setInt(2, t);
                        ins.setInt(3, i * 10 + b);
                        ins.addBatch();
                    }
                    int[] counts = ins.executeBatch();
                    expect(counts.length, 3, label + ": batch size");
                    queries.addAndGet(3);
                } else {
                    ins.setInt(1, threshold);
                    ins.setInt(2, t);
                    ins.setInt(3, i * 10);
                    expect(ins.executeUpdate(), 1, label + ": insert");
                    queries.incrementAndGet();
                }
                if (i % 10 == 9) {
                    conn.rollback();
                } else {
                    conn.commit();
                    expectRows += i % 5 == 4 ? 3 : 1;
                    expectSum += i % 5 == 4 ? (i * 10) * 3 + 3 : i * 10;
                }
            }
            try (PreparedStatement q = conn.prepareStatement(
                    "select count(*), coalesce(sum(i), 0) from " + TABLE + " where threshold = ? and thread = ? and how = 'transaction'")) {
                q.setInt(1, threshold);
                q.setInt(2, t);
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    expect(rs.getLong(1) + "/" + rs.getLong(2), expectRows + "/" + expectSum, client + ": committed rows");
                }
                queries.incrementAndGet();
            }
            conn.commit();
        }
        autocommitWrites(threshold, t);
    }

    /** Autocommit on: parameterised INSERTs (a reused PreparedStatement, server-prepared
     *  once it has run prepareThreshold times) and batches, each its own transaction,
     *  with reads between; then every row read back on the primary. */
    static void autocommitWrites(int threshold, int t) throws SQLException {
        String client = "threshold " + threshold + " thread " + t + " (autocommit)";
        try (Connection conn = connect(threshold)) {
            conn.setAutoCommit(true);
            PreparedStatement ins = conn.prepareStatement(
                    "insert into " + TABLE + " (threshold, thread, i, how) values (?, ?, ?, 'autocommit')");
            PreparedStatement add = conn.prepareStatement(SQL[0]);
            int rows = 0;
            long sum = 0;
            for (int i = 0; i < TXNS / 2; i++) {
                String label = client + " iteration " + i;
                ins.setInt(1, threshold);
                ins.setInt(2, t);
                ins.setInt(3, i);
                expect(ins.executeUpdate(), 1, label + ": insert");
                rows++;
                sum += i;
                RUN[0].run(add, client, label, t, i);
                if (i % 4 == 3) {
                    for (int b = 0; b < 3; b++) {
                        ins.setInt(1, threshold);
                        ins.setInt(2, t);
                        ins.setInt(3, 1000 + i * 10 + b);
                        ins.addBatch();
                    }
                    expect(ins.executeBatch().length, 3, label + ": batch size");
                    rows += 3;
                    sum += 3 * (1000 + i * 10) + 3;
                }
                queries.addAndGet(2);
            }
            try (PreparedStatement q = conn.prepareStatement("/* pgmux:primary */ select count(*), coalesce(sum(i), 0) from " + TABLE
                    + " where threshold = ? and thread = ? and how = 'autocommit'")) {
                q.setInt(1, threshold);
                q.setInt(2, t);
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    expect(rs.getLong(1) + "/" + rs.getLong(2), rows + "/" + sum, client + ": rows committed on the primary");
                }
                queries.incrementAndGet();
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String driverVersion = org.postgresql.util.DriverInfo.DRIVER_VERSION;
        if (args.length > 0 && args[0].equals("--version")) {
            System.out.println(driverVersion);
            return;
        }
        String spec = args.length > 0 ? args[0] : "0,1,5";
        List<Integer> thresholds = new ArrayList<>();
        for (String s : spec.split(",")) thresholds.add(Integer.parseInt(s.trim()));

        try (Connection c = connect(0); Statement st = c.createStatement()) {
            st.execute("drop table if exists " + TABLE);
            st.execute("create table " + TABLE
                    + " (threshold int not null, thread int not null, i int not null, how text not null default 'transaction')");
        } catch (Exception e) {
            failures.add("setup: " + e);
        }

        long deadline = System.currentTimeMillis() + 240_000;
        for (int threshold : thresholds) {
            if (!failures.isEmpty()) break;
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < THREADS; t++) {
                final int tt = t;
                Thread th = new Thread(() -> {
                    try {
                        worker(threshold, tt);
                    } catch (Throwable e) {
                        String state = e instanceof SQLException ? " (SQLSTATE " + ((SQLException) e).getSQLState() + ")" : "";
                        java.io.StringWriter sw = new java.io.StringWriter();
                        e.printStackTrace(new java.io.PrintWriter(sw));
                        failures.add("prepareThreshold=" + threshold + " thread " + tt + ": " + e + state + "\n" + sw);
                    }
                }, "jdbc-" + threshold + "-" + t);
                th.setDaemon(true);
                th.start();
                threads.add(th);
            }
            for (Thread th : threads) {
                th.join(Math.max(1, deadline - System.currentTimeMillis()));
                if (th.isAlive()) failures.add(th.getName() + ": still running after 240 s");
            }
        }

        int lo = Integer.MAX_VALUE, hi = 0;
        synchronized (pids) {
            for (Set<Integer> s : pids.values()) {
                lo = Math.min(lo, s.size());
                hi = Math.max(hi, s.size());
            }
        }
        if (lo == Integer.MAX_VALUE) lo = 0;
        if (failures.isEmpty() && EXPECT_SPREAD && hi < 2) {
            failures.add("no client saw more than one server connection (backends per client " + lo + ".." + hi
                    + "): the workload did not exercise statement reuse across server connections");
        }
        if (!failures.isEmpty()) {
            synchronized (failures) {
                for (String f : failures.subList(0, Math.min(10, failures.size()))) {
                    System.err.println("pgjdbc: FAIL: " + f);
                }
            }
            System.out.println("pgjdbc: FAILED (" + failures.size() + " failures, " + queries.get() + " queries ok); first: "
                    + failures.get(0).split("\n")[0]);
            System.exit(1);
        }
        System.out.println("pgjdbc " + driverVersion + ": " + queries.get() + " queries ok; prepareThreshold="
                + spec + ": " + THREADS + " threads x " + TXNS
                + " txns each, autocommit off, explicit commit/rollback, PreparedStatement reuse, batches; autocommit on: "
                + TXNS / 2 + " INSERTs with parameters and batches per thread outside transactions"
                + "; backends per client " + lo + ".." + hi);
        System.exit(0);
    }
}
