<?php
// PHP PDO pgsql through pgmux. Run by protocol-tests/drivers.rs: `php pdo_workload.php`.
// Connection settings from PGMUX_HOST, PGMUX_PORT, PGMUX_USER, PGMUX_PASSWORD, PGMUX_DB.
//
// With PDO::ATTR_EMULATE_PREPARES => false, PDO prepares each statement on the server
// under a name of its own, pdo_stmt_00000001, pdo_stmt_00000002, ... counted per
// connection (Parse + Sync at its first execute, then Bind/Execute/Sync), and when the
// PDOStatement is destroyed it sends `DEALLOCATE pdo_stmt_...` as SQL. The main process
// starts WORKERS worker processes (PHP has no threads), each with its own connection, so
// the same pdo_stmt_ names stand for different SQL in different clients at the same time:
//   - a statement reused in every iteration, a read and a write (INSERT) outside any
//     transaction, and a statement made, run and destroyed in every iteration;
//   - every third iteration a transaction (every tenth of those rolled back) with reads,
//     writes and a statement with named parameters (:w, :i) and typed bindValue;
//   - a statement PDO deallocated is gone (DEALLOCATE of its name again: 26000), and one
//     deallocated by the application's own `DEALLOCATE` cannot run any more;
// plus one worker with ATTR_EMULATE_PREPARES => true (PDO interpolates, simple queries).
// Then every committed row is read back on the primary (`/* pgmux:primary */`), and
// PGMUX_POOL_SIZE new connections must each get a transaction at once.

const TABLE = 'drv_php';
const WORKERS = 4;
const ITERATIONS = 30;
const EMULATED_ITERATIONS = 15;
const DEADLINE_SECONDS = 150;

function env(string $name, string $default): string
{
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
}

function connect(bool $emulate, string $app = 'drv_php'): PDO
{
    $dsn = sprintf(
        'pgsql:host=%s;port=%s;dbname=%s;sslmode=disable;connect_timeout=10;application_name=%s',
        env('PGMUX_HOST', '127.0.0.1'),
        env('PGMUX_PORT', '6432'),
        env('PGMUX_DB', 'app'),
        $app
    );
    return new PDO($dsn, env('PGMUX_USER', 'app'), env('PGMUX_PASSWORD', 'app'), [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => $emulate,
        PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
        PDO::ATTR_STRINGIFY_FETCHES => false,
    ]);
}

class WrongResult extends Exception
{
}

function expect($got, $want, string $what): void
{
    if ($got !== $want) {
        throw new WrongResult($what . ': got ' . var_export($got, true) . ', expected ' . var_export($want, true));
    }
}

/** What a failure says: the exception and, for a PDOException, its SQLSTATE. */
function describe(Throwable $e): string
{
    $state = $e instanceof PDOException ? ' (SQLSTATE ' . $e->getCode() . ')' : '';
    return get_class($e) . ': ' . trim(strtok($e->getMessage(), "\n")) . $state . ' at line ' . $e->getLine();
}

/** One worker's connection: counts PDO's statement names as it makes them. */
class Worker
{
    public PDO $pdo;
    public int $statements = 0;
    public int $queries = 0;
    public array $pids = [];
    public int $rows = 0;
    public int $sum = 0;
    public int $deallocated = 0;

    public function __construct(public int $w, public bool $emulate)
    {
        $this->pdo = connect($emulate, "drv_php_$w");
    }

    /** A server-side statement: PDO names it pdo_stmt_%08x, counting from 1 per connection. */
    public function prepare(string $sql): array
    {
        $st = $this->pdo->prepare($sql);
        return [$st, $this->emulate ? null : sprintf('pdo_stmt_%08x', ++$this->statements)];
    }

    public function row(PDOStatement $st, array $params, string $what): array
    {
        $st->execute($params ?: null); // no array: the values bound with bindValue
        $rows = $st->fetchAll();
        expect(count($rows), 1, "$what: rows");
        if (isset($rows[0]['pid'])) {
            $this->pids[$rows[0]['pid']] = true;
        }
        $this->queries++;
        return $rows[0];
    }

    public function insert(PDOStatement $st, int $i, int $v, string $how, string $what): void
    {
        $st->execute([$this->w, $i, $v, $how]);
        expect($st->rowCount(), 1, "$what: rows inserted");
        $this->queries++;
    }

    /** `DEALLOCATE name` as SQL, as PDO sends it; returns the SQLSTATE, or null if it worked. */
    public function deallocate(string $name): ?string
    {
        try {
            $this->pdo->exec("DEALLOCATE $name");
            return null;
        } catch (PDOException $e) {
            return (string)$e->getCode();
        }
    }

    public function run(int $iterations): void
    {
        $w = $this->w;
        [$add] = $this->prepare('select ?::int4 + ?::int4 as v, pg_backend_pid() as pid');
        [$ins] = $this->prepare('insert into ' . TABLE . ' (worker, i, v, how) values (?, ?, ?, ?)');
        for ($i = 0; $i < $iterations; $i++) {
            $label = "worker $w iteration $i";
            // Outside any transaction: a reused read and a reused write.
            expect($this->row($add, [$w * 1000, $i], "$label: add")['v'], $w * 1000 + $i, "$label: add");
            $this->insert($ins, $i, $i, 'autocommit', "$label: insert outside a transaction");
            $this->rows++;
            $this->sum += $i;
            // A statement made, run and destroyed: PDO sends DEALLOCATE pdo_stmt_... as SQL.
            [$tmp, $name] = $this->prepare("select ?::text || ':' || ?::int4::text as v, pg_backend_pid() as pid");
            expect($this->row($tmp, ["w$w", $i], "$label: concat")['v'], "w$w:$i", "$label: concat");
            $tmp = null;
            if ($name !== null && $i % 5 == 0) {
                expect($this->deallocate($name), '26000', "$label: DEALLOCATE $name after PDO destroyed the statement (it must be gone)");
                $this->deallocated++;
            }
            if ($i % 3 == 0) {
                $rollback = $i % 10 == 9;
                $this->pdo->beginTransaction();
                expect($this->row($add, [$i, 1], "$label: add in transaction")['v'], $i + 1, "$label: add in transaction");
                $this->insert($ins, $i, 1000 + $i, 'transaction', "$label: insert in a transaction");
                [$ret] = $this->prepare('insert into ' . TABLE . ' (worker, i, v, how) values (:w, :i, :v, :how) returning v, pg_backend_pid() as pid');
                $ret->bindValue(':w', $w, PDO::PARAM_INT);
                $ret->bindValue(':i', $i, PDO::PARAM_INT);
                $ret->bindValue(':v', 2000 + $i, PDO::PARAM_INT);
                $ret->bindValue(':how', 'named', PDO::PARAM_STR);
                expect($this->row($ret, [], "$label: insert returning")['v'], 2000 + $i, "$label: insert returning in a transaction");
                [$cnt] = $this->prepare('select count(*) as n from ' . TABLE . ' where worker = ? and i = ? and how <> ?');
                expect($this->row($cnt, [$w, $i, 'autocommit'], "$label: own rows")['n'], 2, "$label: the transaction sees its own rows");
                $ret = $cnt = null;
                if ($rollback) {
                    $this->pdo->rollBack();
                } else {
                    $this->pdo->commit();
                    $this->rows += 2;
                    $this->sum += 3000 + 2 * $i;
                }
            }
        }
        if (!$this->emulate) {
            // The application's own DEALLOCATE of a live statement: it is gone for PDO too.
            [$live, $name] = $this->prepare('select ?::int4 * 7 as v');
            expect($this->row($live, [6], "worker $w: live statement")['v'], 42, "worker $w: $name");
            expect($this->deallocate($name), null, "worker $w: DEALLOCATE $name of a live statement");
            try {
                $live->execute([1]);
                throw new WrongResult("worker $w: $name ran after DEALLOCATE $name");
            } catch (PDOException $e) {
                expect((string)$e->getCode(), '26000', "worker $w: running $name after DEALLOCATE $name");
            }
            $live = null;
        }
    }
}

function worker_main(int $w, bool $emulate): int
{
    $out = ['worker' => $w, 'queries' => 0, 'pids' => [], 'rows' => 0, 'sum' => 0, 'statements' => 0, 'deallocated' => 0, 'failures' => []];
    try {
        $wk = new Worker($w, $emulate);
        try {
            $wk->run($emulate ? EMULATED_ITERATIONS : ITERATIONS);
        } finally {
            foreach (['queries', 'rows', 'sum', 'statements', 'deallocated'] as $k) {
                $out[$k] = $wk->$k;
            }
            $out['pids'] = array_keys($wk->pids);
        }
    } catch (Throwable $e) {
        $out['failures'][] = "worker $w" . ($emulate ? ' (emulated prepares)' : '') . ': ' . describe($e);
    }
    echo json_encode($out), "\n";
    return 0;
}

/** Starts one worker process; returns [process, stdout pipe, stderr pipe]. */
function start_worker(int $w, bool $emulate): array
{
    $cmd = [PHP_BINARY, __FILE__, 'worker', (string)$w, $emulate ? 'emulate' : 'server'];
    $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
    if ($proc === false) {
        throw new RuntimeException("could not start worker $w");
    }
    stream_set_blocking($pipes[1], false);
    stream_set_blocking($pipes[2], false);
    return [$proc, $pipes[1], $pipes[2]];
}

function main(): int
{
    $failures = [];
    $queries = 0;
    $workers = [];
    $expected = [];
    $spread = [];
    $statements = 0;
    $deallocated = 0;
    try {
        $pdo = connect(false);
        $pdo->exec('drop table if exists ' . TABLE);
        $pdo->exec('create table ' . TABLE . ' (worker int not null, i int not null, v int not null, how text not null)');
        $pdo = null;
        // A new connection's read may reach a replica that has not replayed the creation yet.
        // Reads go round robin over the replicas: 6 new connections in a row must see it.
        $visible = false;
        $seen = 0;
        for ($k = 0; $k < 200 && !$visible; $k++) {
            $c = connect(false);
            $seen = $c->query("select to_regclass('" . TABLE . "') is not null as t")->fetch()['t'] ? $seen + 1 : 0;
            $c = null;
            $visible = $seen >= 6;
            if (!$visible) {
                usleep(50000);
            }
        }
        expect($visible, true, 'table ' . TABLE . ' visible to new connections');

        for ($w = 0; $w <= WORKERS; $w++) {
            $workers[$w] = start_worker($w, $w == WORKERS);
        }
        $outputs = array_fill(0, WORKERS + 1, '');
        $errors = array_fill(0, WORKERS + 1, '');
        $deadline = microtime(true) + DEADLINE_SECONDS;
        $running = array_keys($workers);
        while ($running) {
            foreach ($running as $idx => $w) {
                [$proc, $out, $err] = $workers[$w];
                $outputs[$w] .= stream_get_contents($out);
                $errors[$w] .= stream_get_contents($err);
                $st = proc_get_status($proc);
                if (!$st['running']) {
                    $outputs[$w] .= stream_get_contents($out);
                    $errors[$w] .= stream_get_contents($err);
                    if ($st['exitcode'] != 0) {
                        $failures[] = "worker $w exited with {$st['exitcode']}: " . trim($errors[$w]);
                    }
                    unset($running[$idx]);
                }
            }
            if ($running && microtime(true) > $deadline) {
                foreach ($running as $w) {
                    proc_terminate($workers[$w][0], 9);
                    $failures[] = "worker $w still running after " . DEADLINE_SECONDS . ' s';
                }
                break;
            }
            usleep(20000);
        }
        foreach ($outputs as $w => $text) {
            $r = json_decode(trim($text), true);
            if (!is_array($r)) {
                $failures[] = "worker $w: no report (stdout: " . trim($text) . '; stderr: ' . trim($errors[$w]) . ')';
                continue;
            }
            $failures = array_merge($failures, $r['failures']);
            $queries += $r['queries'];
            $expected[$w] = [$r['rows'], $r['sum']];
            $spread[] = count($r['pids']);
            $statements += $r['statements'];
            $deallocated += $r['deallocated'];
        }

        // Every committed row, read back on the primary; the rolled-back ones absent.
        $c = connect(false, 'drv_php_check');
        $got = [];
        foreach ($c->query('/* pgmux:primary */ select worker, count(*) as n, coalesce(sum(v), 0) as s from ' . TABLE . ' group by worker') as $r) {
            $got[$r['worker']] = [$r['n'], $r['s']];
        }
        ksort($got);
        ksort($expected);
        expect($got, $expected, 'rows committed on the primary per worker [count, sum]');
        $queries++;
        $c = null;

        // No server connection kept by a client that is gone: POOL_SIZE new clients each
        // get a transaction at once.
        $n = (int)env('PGMUX_POOL_SIZE', '2');
        $conns = [];
        $pids = [];
        $t0 = microtime(true);
        for ($k = 0; $k < $n; $k++) {
            $conns[$k] = connect(false, 'drv_php_after');
            $conns[$k]->beginTransaction();
            $pids[$conns[$k]->query('select pg_backend_pid() as pid')->fetch()['pid']] = true;
            $queries++;
        }
        $waited = microtime(true) - $t0;
        expect(count($pids), $n, "$n new clients each in a transaction: distinct server connections");
        if ($waited > 3) {
            throw new WrongResult(sprintf('%d new clients took %.1f s to get a transaction each', $n, $waited));
        }
        foreach ($conns as $c) {
            $c->commit();
        }
        $conns = [];
    } catch (Throwable $e) {
        $failures[] = 'main: ' . describe($e);
    } finally {
        foreach ($workers as [$proc, $out, $err]) {
            fclose($out);
            fclose($err);
            proc_close($proc);
        }
    }
    $lo = $spread ? min($spread) : 0;
    $hi = $spread ? max($spread) : 0;
    if (!$failures && getenv('PGMUX_EXPECT_SPREAD') === '1' && $hi < 2) {
        $failures[] = "no client saw more than one server connection (backends per client $lo..$hi): "
            . 'the workload did not exercise statement reuse across server connections';
    }
    if ($failures) {
        foreach (array_slice($failures, 0, 10) as $f) {
            fwrite(STDERR, "pdo_pgsql: FAIL: $f\n");
        }
        if (count($failures) > 10) {
            fwrite(STDERR, 'pdo_pgsql: ... and ' . (count($failures) - 10) . " more failures\n");
        }
        printf("pdo_pgsql: FAILED (%d failures, %d queries ok); first: %s\n", count($failures), $queries, strtok($failures[0], "\n"));
        return 1;
    }
    printf(
        "PHP %s pdo_pgsql (libpq %s): %d queries ok; ATTR_EMULATE_PREPARES=false: %d processes x %d iterations, %d named "
            . "statements (pdo_stmt_*) made and destroyed (PDO's DEALLOCATE checked %d times), reads and writes outside and "
            . "inside transactions, named parameters; ATTR_EMULATE_PREPARES=true: 1 process x %d iterations; backends per client %d..%d\n",
        PHP_VERSION,
        defined('PGSQL_LIBPQ_VERSION') ? PGSQL_LIBPQ_VERSION : '?',
        $queries,
        WORKERS,
        ITERATIONS,
        $statements,
        $deallocated,
        EMULATED_ITERATIONS,
        $lo,
        $hi
    );
    return 0;
}

if (($argv[1] ?? '') === '--version') {
    echo PHP_VERSION, "\n";
    exit(0);
}
if (($argv[1] ?? '') === 'worker') {
    exit(worker_main((int)$argv[2], ($argv[3] ?? '') === 'emulate'));
}
exit(main());
