//! SHOW PEERS: the fleet as this instance sees it (PgBouncer has one for its static
//! `[peers]`): this instance first, then every live peer, with what each says and its
//! share of the budget.

use super::{n, ResultSet};
use crate::state::State;

pub(super) fn peers(state: &State) -> ResultSet {
    let columns = vec![
        ("addr", false),
        ("instance", false),
        ("nonce", false),
        ("state", false),
        ("heard_ms_ago", true),
        ("same_view", false),
        ("compliant", false),
        ("pool_size_share", true),
    ];
    let Some(fleet) = &state.fleet else { return ResultSet { columns, rows: vec![] } };
    let config = state.config.current();
    let size = config.pool.size;
    let (view, shares) = (fleet.view(), state.shares());
    let rows = fleet
        .rows()
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            // This instance: what it may use now; a peer: its part in this view.
            let share = if !fleet.share_pools() {
                size
            } else if i == 0 {
                shares.of(size)
            } else {
                view.share(r.nonce, size)
            };
            vec![
                r.addr.map(|a| a.to_string()),
                n(format!("{:04x}", r.instance)),
                n(format!("{:016x}", r.nonce)),
                n(r.state),
                r.heard_ms_ago.and_then(n),
                n(r.same_view),
                n(r.compliant),
                n(share),
            ]
        })
        .collect();
    ResultSet { columns, rows }
}
