// pgjdbc LISTEN/NOTIFY through pgmux in transaction mode (protocol-tests/drivers/notify.rs):
// several connections LISTEN on a pool of 2 and poll PGConnection.getNotifications(timeout),
// running queries between polls; every notification once, in order; a LISTEN rolled back
// (autocommit off) listens to nothing.
import java.sql.*;
import java.util.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;

public class JdbcNotify {
    static final int LISTENERS = 6;
    static final int COUNT = 200;

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static Connection connect() throws SQLException {
        String url = "jdbc:postgresql://" + env("PGMUX_HOST", "127.0.0.1") + ":" + env("PGMUX_PORT", "6432") + "/"
                + env("PGMUX_DB", "app") + "?sslmode=disable&ApplicationName=drv_jdbc_notify&connectTimeout=10";
        return DriverManager.getConnection(url, env("PGMUX_USER", "app"), env("PGMUX_PASSWORD", "app"));
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("--version")) {
            System.out.println(org.postgresql.util.DriverInfo.DRIVER_VERSION);
            return;
        }
        List<Connection> conns = new ArrayList<>();
        for (int i = 0; i < LISTENERS; i++) {
            Connection c = connect();
            try (Statement s = c.createStatement()) {
                s.execute("LISTEN jdbc_chan");
                c.setAutoCommit(false);
                s.execute("LISTEN jdbc_never");
                c.rollback();
                c.setAutoCommit(true);
            }
            conns.add(c);
        }
        try (Connection sender = connect(); Statement s = sender.createStatement()) {
            for (int k = 0; k < COUNT; k++) {
                s.execute("NOTIFY jdbc_never, 'no'; NOTIFY jdbc_chan, '" + k + "'");
            }
        }
        List<String> fails = new ArrayList<>();
        for (int i = 0; i < LISTENERS; i++) {
            Connection c = conns.get(i);
            PGConnection pg = c.unwrap(PGConnection.class);
            List<String> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 30000;
            while (got.size() < COUNT && System.currentTimeMillis() < deadline) {
                PGNotification[] ns = pg.getNotifications(500);
                if (ns != null) for (PGNotification n : ns) got.add(n.getName() + ":" + n.getParameter());
                try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select 1")) {
                    r.next();
                }
            }
            PGNotification[] extra = pg.getNotifications(200);
            List<String> want = new ArrayList<>();
            for (int k = 0; k < COUNT; k++) want.add("jdbc_chan:" + k);
            if (!got.equals(want)) fails.add("listener " + i + ": got " + got.size() + " of " + COUNT + " or out of order");
            if (extra != null && extra.length > 0) fails.add("listener " + i + ": " + extra.length + " more than sent");
            c.close();
        }
        if (!fails.isEmpty()) {
            for (String f : fails) System.err.println("FAIL: " + f);
            System.exit(1);
        }
        System.out.println("pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION + ": " + LISTENERS
                + " connections polled getNotifications() between queries and received " + COUNT
                + " notifications each, once and in order; a rolled-back LISTEN delivered nothing");
    }
}
