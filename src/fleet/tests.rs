//! Three fleet members on loopback, each with a small listener that hands peer
//! packets to [`Fleet::on_packet`] as the client port does.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::view::Shares;
use super::wire::FLEET_REQUEST_CODE;
use super::{Fleet, Forward, Received};
use crate::config::{Dur, FleetConfig};

struct Member {
    fleet: Arc<Fleet>,
    cancels: mpsc::UnboundedReceiver<(i32, Vec<u8>)>,
    listener: tokio::task::JoinHandle<()>,
    heartbeats: tokio::task::JoinHandle<()>,
}

async fn start(listener: TcpListener, peers: Vec<String>, share: bool) -> Member {
    let config = FleetConfig {
        peers,
        peers_dns: None,
        secret: "a-shared-secret-of-the-fleet".into(),
        secret_file: None,
        share_pools: share,
        heartbeat_interval: Dur(Duration::from_millis(100)),
        peer_timeout: Dur(Duration::from_millis(400)),
    };
    let keys = crate::cancel_key::KeyMaker::new(rand::random(), Some(config.secret.as_bytes()));
    let fleet = Fleet::new(&config, keys);
    let (tx, cancels) = mpsc::unbounded_channel();
    let f = fleet.clone();
    let listener = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (f, tx) = (f.clone(), tx.clone());
            tokio::spawn(async move {
                let len = s.read_i32().await.unwrap();
                assert_eq!(s.read_i32().await.unwrap(), FLEET_REQUEST_CODE);
                let mut body = vec![0; len as usize - 8];
                s.read_exact(&mut body).await.unwrap();
                match f.on_packet(&body) {
                    Received::Answer(a) => s.write_all(&a).await.unwrap(),
                    Received::Cancel(pid, secret) => {
                        let _ = tx.send((pid, secret));
                    }
                    Received::Nothing => {}
                }
            });
        }
    });
    let heartbeats = tokio::spawn(fleet.clone().run());
    Member { fleet, cancels, listener, heartbeats }
}

async fn fleet_of(n: usize, share: bool) -> Vec<Member> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let peers: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let mut members = Vec::new();
    for l in listeners {
        members.push(start(l, peers.clone(), share).await);
    }
    members
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn share(f: &Fleet, total: usize) -> usize {
    f.shares().borrow().of(total)
}

#[tokio::test]
async fn members_find_each_other_and_divide_the_budget() {
    let members = fleet_of(3, true).await;
    for m in &members {
        m.fleet.set_compliance(Box::new(|_: &Shares| true));
    }
    until("three live members everywhere", || members.iter().all(|m| m.fleet.live() == 3)).await;
    until("shares of 12 settle at 4 each", || members.iter().all(|m| share(&m.fleet, 12) == 4)).await;
    let rows = members[0].fleet.rows();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].state, "self");
    assert!(rows[0].addr.is_some(), "it found itself among the peers");
    // One leaves: the two others take over its share once both see it gone.
    members[2].heartbeats.abort();
    members[2].listener.abort();
    until("two live members", || members[..2].iter().all(|m| m.fleet.live() == 2)).await;
    until("shares of 12 settle at 6 each", || members[..2].iter().all(|m| share(&m.fleet, 12) == 6)).await;
}

#[tokio::test]
async fn a_newcomer_waits_until_the_others_hold_no_more_than_their_new_share() {
    let mut listeners = Vec::new();
    for _ in 0..2 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let peers: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let b_listener = listeners.pop().unwrap();
    let a = start(listeners.pop().unwrap(), peers.clone(), true).await;
    // A holds 12 connections until told otherwise.
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(12));
    let h = held.clone();
    a.fleet.set_compliance(Box::new(move |s: &Shares| h.load(std::sync::atomic::Ordering::Relaxed) <= s.target(12)));
    until("A alone takes everything", || share(&a.fleet, 12) == 12).await;
    let b = start(b_listener, peers, true).await;
    b.fleet.set_compliance(Box::new(|_: &Shares| true));
    until("A's share shrinks as soon as it sees B", || share(&a.fleet, 12) == 6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(share(&b.fleet, 12), 0, "B takes nothing while A still holds 12");
    held.store(6, std::sync::atomic::Ordering::Relaxed);
    until("B takes its share once A holds 6", || share(&b.fleet, 12) == 6).await;
}

#[tokio::test]
async fn a_cancel_reaches_the_instance_whose_key_it_is_and_no_further() {
    let mut members = fleet_of(3, false).await;
    until("three live members everywhere", || members.iter().all(|m| m.fleet.live() == 3)).await;
    let mut rng = rand::thread_rng();
    for long in [false, true] {
        let key = members[1].fleet.keys().secret(4242, long, &mut rng);
        assert_eq!(members[0].fleet.forward_cancel(4242, key.as_bytes()).await, Forward::Forwarded);
        let got = tokio::time::timeout(Duration::from_secs(2), members[1].cancels.recv()).await.unwrap().unwrap();
        assert_eq!(got, (4242, key.as_bytes().to_vec()));
        assert!(members[2].cancels.try_recv().is_err(), "only the owner hears of it");
        assert!(members[0].cancels.try_recv().is_err());
    }
    // Its own key, for a client that has left: nobody to tell.
    let own = members[0].fleet.keys().secret(7, false, &mut rng);
    assert_eq!(members[0].fleet.forward_cancel(7, own.as_bytes()).await, Forward::NoOwner);
    let mut forged = members[1].fleet.keys().secret(7, true, &mut rng).as_bytes().to_vec();
    forged[20] ^= 1;
    assert_eq!(members[0].fleet.forward_cancel(7, &forged).await, Forward::Forged);
    assert!(members[1].cancels.try_recv().is_err(), "a forged key goes nowhere");
}
