use super::*;
use std::sync::atomic::AtomicUsize;

fn inbox(cap: usize) -> (Arc<Inbox>, Arc<AtomicUsize>) {
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    (
        Inbox::new(
            cap,
            Box::new(move || {
                w.fetch_add(1, Relaxed);
            }),
        ),
        woken,
    )
}

fn note(channel: &str, payload: &str) -> Notification {
    Notification { pid: 1, channel: channel.into(), payload: payload.into() }
}

fn payloads(i: &Inbox) -> Vec<String> {
    i.drain().iter().map(|n| n.payload.to_string()).collect()
}

fn set(chs: &[&str]) -> BTreeSet<Arc<str>> {
    chs.iter().map(|c| Arc::from(*c)).collect()
}

#[test]
fn each_listener_gets_its_channels_in_order_once() {
    let hub = Hub::default();
    let (a, woken_a) = inbox(10);
    let (b, _) = inbox(10);
    hub.listen("jobs", 1, &a);
    hub.listen("jobs", 2, &b);
    hub.listen("other", 2, &b);
    assert_eq!(hub.channels().0.len(), 2);
    assert_eq!(hub.counts(), (2, 2, 0));
    for i in 0..3 {
        hub.deliver(note("jobs", &i.to_string()));
    }
    hub.deliver(note("other", "x"));
    hub.deliver(note("nobody", "y"));
    assert_eq!(hub.counts(), (2, 2, 7));
    assert_eq!(payloads(&a), ["0", "1", "2"]);
    assert_eq!(b.drain().len(), 4);
    assert!(a.is_empty() && b.is_empty());
    assert_eq!(woken_a.load(Relaxed), 1, "woken when the inbox stops being empty, not per notification");
    assert_eq!(hub.stats.delivered.load(Relaxed), 7);
}

#[test]
fn the_channel_set_changes_only_when_a_channel_gains_its_first_or_loses_its_last_listener() {
    let hub = Hub::default();
    let (a, _) = inbox(10);
    let (b, _) = inbox(10);
    hub.listen("jobs", 1, &a);
    let g = hub.generation.load(Relaxed);
    hub.listen("jobs", 2, &b);
    hub.unlisten("jobs", 1);
    assert_eq!(hub.generation.load(Relaxed), g);
    hub.unlisten_all(2, &set(&["jobs"]));
    assert_eq!(hub.generation.load(Relaxed), g + 1);
    assert!(hub.channels().0.is_empty());
}

#[test]
fn a_full_inbox_overflows_and_takes_nothing_more() {
    let hub = Hub::default();
    let (a, _) = inbox(2);
    hub.listen("c", 1, &a);
    for i in 0..5 {
        hub.deliver(note("c", &i.to_string()));
    }
    assert_eq!(a.trouble(), Trouble::Overflowed);
    assert_eq!(a.len(), 2, "bounded");
    assert_eq!(hub.stats.dropped.load(Relaxed), 3);
    a.drain();
    hub.deliver(note("c", "later"));
    assert!(a.is_empty(), "an overflowed client is on its way out");
}

#[test]
fn a_lost_listening_connection_marks_every_listener() {
    let hub = Hub::default();
    let (a, woken) = inbox(2);
    hub.listen("c", 1, &a);
    hub.lost();
    assert_eq!(a.trouble(), Trouble::Missed);
    assert!(a.has_news());
    assert_eq!(woken.load(Relaxed), 1);
}

#[test]
fn a_new_channel_is_cut_at_the_marker_between_the_clients_connection_and_the_hub() {
    let hub = Hub::default();
    let (a, _) = inbox(100);
    hub.listen("old", 1, &a);
    let (gate, _) = hub.listen_gated(&set(&["new"]), 1, &a, "t1".into());
    // Before the marker: the client's own connection has these (the hub drops them).
    hub.deliver(note("new", "before"));
    hub.deliver(note("old", "o1"));
    hub.marker("other instance's token");
    hub.marker("t1");
    // After it, kept until the merge.
    hub.deliver(note("new", "after1"));
    let from_conn = [Arc::new(note("new", "before"))];
    assert!(hub.merge(&gate, &from_conn, &a));
    hub.deliver(note("new", "after2"));
    assert_eq!(payloads(&a), ["o1", "before", "after1", "after2"]);
}

#[test]
fn a_closing_gate_stops_delivery_at_the_marker() {
    let hub = Hub::default();
    let (a, _) = inbox(100);
    hub.listen("c", 1, &a);
    let gate = hub.close_gated(&set(&["c"]), 1, "t".into());
    hub.deliver(note("c", "before"));
    hub.marker("t");
    hub.deliver(note("c", "after"));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(gate.passed());
    assert_eq!(payloads(&a), ["before"]);
}

#[test]
fn purge_forgets_an_unlistened_channels_queue() {
    let (a, _) = inbox(10);
    let hub = Hub::default();
    hub.listen("x", 1, &a);
    hub.listen("y", 1, &a);
    hub.deliver(note("x", "1"));
    hub.deliver(note("y", "2"));
    a.purge(&set(&["x"]));
    assert_eq!(payloads(&a), ["2"]);
}

#[test]
fn waiting_for_the_listening_connection() {
    let hub = Arc::new(Hub::default());
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let h = hub.clone();
        let waiter = tokio::spawn(async move { h.listened(3).await });
        tokio::task::yield_now().await;
        hub.set_listened(2);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        hub.set_listened(3);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
    });
}
