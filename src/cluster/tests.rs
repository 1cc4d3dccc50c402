use super::*;
use std::collections::HashSet;
use std::process::Command;

fn spec(replicas: usize) -> ClusterSpec {
    let mut spec = ClusterSpec::default();
    spec.users.push(("app".into(), "app".into(), false));
    spec.databases.push("app".into());
    ClusterSpec { replicas, ..spec }
}

/// "pid args" of processes whose command line mentions `dir` (postmasters) and their children.
fn procs_of(dir: &Path) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid=,ppid=,args="]).output();
    let out = String::from_utf8(out.expect("ps").stdout).unwrap();
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    let (dir, mut roots, mut found) = (dir.to_string_lossy(), vec![], vec![]);
    for r in rows.iter().filter(|r| r.join(" ").contains(&*dir)) {
        roots.push(r[0]);
    }
    for r in rows.iter().filter(|r| roots.contains(&r[0]) || roots.contains(&r[1])) {
        found.push(r.join(" "));
    }
    found
}

fn q(cl: &Cluster, port: u16, db: &str, sql: &str) -> String {
    cl.psql(port, db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn primary_two_replicas_lifecycle() {
    let t = Instant::now();
    let cl = Cluster::start(&spec(2)).expect("start");
    eprintln!("Cluster::start with 2 replicas: {:?} in {:?}", t.elapsed(), cl.dir());
    let (p, r0, r1) = (cl.primary.port, cl.replicas[0].port, cl.replicas[1].port);
    assert_eq!(q(&cl, p, "postgres", "select pg_is_in_recovery()"), "f");
    for r in &cl.replicas {
        assert_eq!(q(&cl, r.port, "postgres", "select pg_is_in_recovery()"), "t");
        assert!(r.log_file().exists());
    }
    // every node runs the major PGMUX_TEST_PG asked for
    if let Some(want) = bins::wanted_major().unwrap() {
        assert_eq!(cl.major(), want);
    }
    for n in cl.nodes() {
        let major = q(&cl, n.port, "postgres", "select current_setting('server_version_num')::int / 10000");
        assert_eq!(major, cl.major().to_string());
    }
    let scram = "select count(*) from pg_authid where rolpassword like 'SCRAM-SHA-256$%'";
    assert_eq!(q(&cl, p, "postgres", scram), "2", "postgres and app have SCRAM verifiers (13 hashes md5 by default)");
    let owner = "select pg_get_userbyid(datdba) from pg_database where datname = 'app'";
    assert_eq!(q(&cl, r1, "postgres", owner), "app", "role and db replicated");

    q(&cl, p, "app", "create table t (id int, v text); insert into t values (1, 'one')");
    cl.wait_replicas_caught_up().unwrap();
    for r in &cl.replicas {
        assert_eq!(q(&cl, r.port, "app", "select string_agg(v, ',') from t"), "one");
    }
    let e = cl.psql(p, "app", "select * from no_such_table").unwrap_err();
    assert!(e.to_string().contains("no_such_table"), "{e}");

    // stop and restart a replica; it catches up with what happened meanwhile
    cl.stop_node(r0).unwrap();
    assert!(cl.psql(r0, "postgres", "select 1").is_err());
    q(&cl, p, "app", "insert into t values (2, 'two')");
    cl.start_node(r0).unwrap();
    cl.wait_replicas_caught_up().unwrap();
    assert_eq!(q(&cl, r0, "app", "select count(*) from t"), "2");
    assert_eq!(q(&cl, r0, "postgres", "select pg_is_in_recovery()"), "t");

    // failover: stop the primary, promote replica 1
    cl.stop_node(p).unwrap();
    cl.promote(r1).unwrap();
    assert_eq!(q(&cl, r1, "postgres", "select pg_is_in_recovery()"), "f");
    q(&cl, r1, "app", "insert into t values (3, 'three')");
    assert!(cl.stop_node(1).is_err(), "unknown port");

    let dir = cl.dir().to_path_buf();
    assert!(!procs_of(&dir).is_empty(), "expected running servers");
    drop(cl);
    assert_eq!(procs_of(&dir), Vec::<String>::new(), "processes left after drop");
    assert!(!dir.exists(), "temp dir left after drop");
}

#[test]
fn catch_up_sees_every_async_commit() {
    let cl = Cluster::start(&spec(1)).expect("start");
    for i in 0..20 {
        q(&cl, cl.primary.port, "app", &format!("create table t{i} ()"));
        cl.wait_replicas_caught_up().unwrap();
        let sql = format!("select count(*) from pg_class where relname = 't{i}'");
        assert_eq!(q(&cl, cl.replicas[0].port, "app", &sql), "1", "iteration {i}");
    }
}

#[test]
fn passwords_and_port_errors() {
    let cl = Cluster::start(&spec(0)).expect("start");
    let port = cl.primary.port;
    let login = |pw: &str| {
        let args = format!("-X -A -t -h 127.0.0.1 -U app -d app -p {port}");
        let mut c = cl.rt.cmd("psql", &args);
        c.args(["-c", "select current_user"]).env("PGPASSWORD", pw);
        cl.rt.run(&mut c, "psql as app")
    };
    assert_eq!(login("app").unwrap().trim(), "app");
    let e = login("wrong").unwrap_err().to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    let mut bad = spec(0);
    bad.users.push(("postgres".into(), "x".into(), true));
    assert!(Cluster::start(&bad).is_err(), "postgres must not be redefined");
    // a restart on a port that is taken fails with the server log tail in the error
    cl.stop_node(port).unwrap();
    let hog = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let e = cl.start_node(port).unwrap_err().to_string();
    assert!(e.contains("Address already in use") && e.contains(LOG_NAME), "{e}");
    drop(hog);
    cl.start_node(port).unwrap();
    // a first start moves on to another port when the wanted one is taken
    cl.stop_node(port).unwrap();
    let hog = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut n = Node::new(cl.primary.data_dir.clone());
    n.port = hog.local_addr().unwrap().port();
    cl.rt.start_new(&mut n).unwrap();
    assert_ne!(n.port, hog.local_addr().unwrap().port());
    assert_eq!(q(&cl, n.port, "postgres", "select 1"), "1");
}

#[test]
fn two_clusters_at_once() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Cluster::start(&spec(1)));
        let b = s.spawn(|| Cluster::start(&spec(1)));
        (a.join().unwrap().expect("a"), b.join().unwrap().expect("b"))
    });
    let ports: HashSet<u16> = a.nodes().chain(b.nodes()).map(|n| n.port).collect();
    assert_eq!(ports.len(), 4);
    q(&a, a.primary.port, "app", "create table only_a (x int)");
    a.wait_replicas_caught_up().unwrap();
    b.wait_replicas_caught_up().unwrap();
    assert_eq!(q(&a, a.replicas[0].port, "app", "select count(*) from only_a"), "0");
    assert!(b.psql(b.replicas[0].port, "app", "select 1 from only_a").is_err());
    let (da, db) = (a.dir().to_path_buf(), b.dir().to_path_buf());
    drop(a);
    assert!(procs_of(&da).is_empty());
    assert!(!procs_of(&db).is_empty(), "dropping a must not touch b");
    drop(b);
    assert!(procs_of(&db).is_empty());
}
