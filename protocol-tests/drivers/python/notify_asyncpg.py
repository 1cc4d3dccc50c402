"""asyncpg LISTEN/NOTIFY through pgmux in transaction mode (protocol-tests/notify.rs):
several connections with add_listener on a pool of 2, queries running on them
meanwhile; every notification once, in order; remove_listener stops delivery."""

import asyncio

import asyncpg

from drvcommon import DB, HOST, PASSWORD, PORT, USER, exit_on_failures

LISTENERS = 6
COUNT = 200


async def main():
    conns = [await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB,
                                   statement_cache_size=100) for _ in range(LISTENERS)]
    got = [[] for _ in conns]
    done = asyncio.Event()

    def callback(i):
        def on(conn, pid, channel, payload):
            got[i].append(payload)
            if all(len(g) >= COUNT for g in got):
                done.set()
        return on

    callbacks = [callback(i) for i in range(LISTENERS)]
    for i, c in enumerate(conns):
        await c.add_listener("apg_chan", callbacks[i])
    sender = await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB)

    async def busy(c):
        # The listening connections run queries (prepared, in transactions) meanwhile.
        for k in range(20):
            async with c.transaction():
                assert await c.fetchval("select $1::int + 1", k) == k + 1

    async def send():
        for k in range(COUNT):
            await sender.execute(f"NOTIFY apg_chan, '{k}'")

    await asyncio.gather(send(), *(busy(c) for c in conns))
    try:
        await asyncio.wait_for(done.wait(), 30)
    except asyncio.TimeoutError:
        pass
    fails = [f"listener {i}: got {len(g)} of {COUNT}, in order: {g == sorted(g, key=int)}"
             for i, g in enumerate(got) if g != [str(k) for k in range(COUNT)]]
    # remove_listener (UNLISTEN): nothing more arrives.
    await conns[0].remove_listener("apg_chan", callbacks[0])
    n0 = len(got[0])
    await sender.execute("NOTIFY apg_chan, 'after'")
    await asyncio.sleep(0.5)
    for c in conns:
        await c.fetchval("select 1")
    if len(got[0]) != n0:
        fails.append("listener 0 got a notification after remove_listener")
    if any(len(g) != COUNT + 1 for g in got[1:]):
        fails.append(f"the others should have {COUNT + 1}: {[len(g) for g in got[1:]]}")
    exit_on_failures(fails)
    print(f"asyncpg {asyncpg.__version__}: {LISTENERS} add_listener connections received {COUNT} notifications each, "
          f"once and in order, with transactions running on them; remove_listener stops delivery")


asyncio.run(main())
