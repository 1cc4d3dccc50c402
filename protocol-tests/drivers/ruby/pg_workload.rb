#!/usr/bin/env ruby
# frozen_string_literal: true

# Ruby's pg gem through pgmux. Run by protocol-tests/drivers.rs: `ruby pg_workload.rb`.
# Connection settings from PGMUX_HOST, PGMUX_PORT, PGMUX_USER, PGMUX_PASSWORD, PGMUX_DB.
#
# Several connections, one thread each (pg releases Ruby's lock while it waits for the
# server), share pgmux's small pool:
#   - exec_params (unnamed statements) reads and INSERTs outside any transaction;
#   - prepare/exec_prepared: named statements (drv_rb_add, drv_rb_ins, ...), the same
#     names meaning different SQL on different connections, reused for the whole run;
#     a statement dropped with SQL `DEALLOCATE name` and prepared again as other SQL;
#   - transactions (conn.transaction), every fifth one rolled back;
#   - copy_data: COPY ... FROM STDIN outside a transaction, and COPY ... TO STDOUT.
# Then every committed row is read back on the primary (`/* pgmux:primary */`), and
# PGMUX_POOL_SIZE new connections must each get a transaction at once.

require 'pg'
require 'set'

TABLE = 'drv_ruby'
THREADS = 4
ITERATIONS = 30
COPY_ROWS = 20

class WrongResult < StandardError; end

# Raised in a transaction block to roll it back (pg re-raises it after ROLLBACK).
class Rollback < StandardError; end

def expect(got, want, what)
  raise WrongResult, "#{what}: got #{got.inspect}, expected #{want.inspect}" unless got == want
end

def connect(app = 'drv_ruby')
  PG.connect(
    host: ENV.fetch('PGMUX_HOST', '127.0.0.1'), port: ENV.fetch('PGMUX_PORT', '6432').to_i,
    user: ENV.fetch('PGMUX_USER', 'app'), password: ENV.fetch('PGMUX_PASSWORD', 'app'),
    dbname: ENV.fetch('PGMUX_DB', 'app'), sslmode: 'disable', connect_timeout: 10, application_name: app
  )
end

# What a failure says: the exception and, for a server error, its SQLSTATE.
def describe(err)
  state = err.respond_to?(:result) && err.result ? " (SQLSTATE #{err.result.error_field(PG::Result::PG_DIAG_SQLSTATE)})" : ''
  where = (err.backtrace || []).find { |l| l.include?(File.basename(__FILE__)) }
  "#{err.class}: #{err.message.lines.first&.strip}#{state}#{where ? " at #{where}" : ''}"
end

# One connection's share of the workload; returns what it committed.
class Worker
  attr_reader :queries, :pids, :rows, :sum

  def initialize(t)
    @t = t
    @conn = connect("drv_ruby_#{t}")
    @queries = 0
    @pids = Set.new
    @rows = 0
    @sum = 0
  end

  def close
    @conn.close
  end

  def one(res, what)
    expect(res.ntuples, 1, "#{what}: rows")
    @pids << res[0]['pid'].to_i if res.fields.include?('pid')
    @queries += 1
    res[0]
  end

  def committed(n, v)
    @rows += n
    @sum += v
  end

  def prepare_all(order)
    t = @t
    statements = {
      'drv_rb_add' => "select $1::int4 + $2::int4 + #{t} as v, pg_backend_pid() as pid",
      'drv_rb_text' => "select 'rb#{t}:' || $1::text as v, pg_backend_pid() as pid",
      'drv_rb_ins' => "insert into #{TABLE} (thread, i, v, how) values ($1, $2, $3, $4)",
      'drv_rb_count' => "select count(*) as n from #{TABLE} where thread = $1 and i = $2 and how = $3"
    }
    order.each { |name| @conn.prepare(name, statements.fetch(name)) }
  end

  def run
    t = @t
    c = @conn
    names = %w[drv_rb_add drv_rb_text drv_rb_ins drv_rb_count]
    prepare_all(names.rotate(t)) # a different first-use order on each connection
    ITERATIONS.times do |i|
      label = "thread #{t} iteration #{i}"
      # Outside any transaction: named statements, then unnamed ones (exec_params).
      expect(one(c.exec_prepared('drv_rb_add', [i, 1]), label)['v'].to_i, i + 1 + t, "#{label}: drv_rb_add")
      expect(one(c.exec_prepared('drv_rb_text', [i]), label)['v'], "rb#{t}:#{i}", "#{label}: drv_rb_text")
      expect(c.exec_prepared('drv_rb_ins', [t, i, i, 'exec_prepared']).cmd_tuples, 1, "#{label}: exec_prepared insert")
      committed(1, i)
      expect(c.exec_params("insert into #{TABLE} (thread, i, v, how) values ($1, $2, $3, 'exec_params')", [t, i, 100 + i]).cmd_tuples,
             1, "#{label}: exec_params insert")
      committed(1, 100 + i)
      row = one(c.exec_params('select $1::int8 * 2 as v, pg_backend_pid() as pid', [t * 1000 + i]), label)
      expect(row['v'].to_i, (t * 1000 + i) * 2, "#{label}: exec_params read")
      @queries += 2

      if i % 3 == 0
        rollback = i % 15 == 12
        begin
          c.transaction do |tx|
            expect(tx.exec_prepared('drv_rb_ins', [t, i, 1000 + i, 'transaction']).cmd_tuples, 1, "#{label}: insert in a transaction")
            v = one(tx.exec_params("insert into #{TABLE} (thread, i, v, how) values ($1, $2, $3, 'transaction') returning v, pg_backend_pid() as pid",
                                   [t, i, 2000 + i]), label)['v'].to_i
            expect(v, 2000 + i, "#{label}: insert returning in a transaction")
            expect(one(tx.exec_prepared('drv_rb_count', [t, i, 'transaction']), label)['n'].to_i, 2, "#{label}: the transaction sees its rows")
            @queries += 1
            raise Rollback if rollback
          end
          committed(2, 3000 + 2 * i)
        rescue Rollback
          nil
        end
      end

      if i % 5 == 4
        # COPY FROM STDIN outside a transaction.
        res = c.copy_data("COPY #{TABLE} (thread, i, v, how) FROM STDIN") do
          COPY_ROWS.times { |k| c.put_copy_data("#{t}\t#{i}\t#{k}\tcopy\n") }
        end
        expect(res.cmd_tuples, COPY_ROWS, "#{label}: rows of COPY FROM STDIN")
        committed(COPY_ROWS, (0...COPY_ROWS).sum)
        @queries += 1
        # COPY TO STDOUT: the rows this connection copied in.
        lines = []
        c.copy_data("COPY (select v from #{TABLE} where thread = #{t} and i = #{i} and how = 'copy' order by v) TO STDOUT") do
          while (line = c.get_copy_data)
            lines << line.chomp
          end
        end
        # A replica may not have replayed the rows yet: compare only when some are there.
        expect(lines, (0...COPY_ROWS).map(&:to_s), "#{label}: COPY TO STDOUT") unless lines.empty?
        @queries += 1
      end

      next unless i % 10 == 9

      # DEALLOCATE a named statement with SQL and prepare the name again for other SQL.
      c.exec('DEALLOCATE drv_rb_text')
      c.prepare('drv_rb_text', "select 'again#{t}:' || $1::text as v, pg_backend_pid() as pid")
      expect(one(c.exec_prepared('drv_rb_text', [i]), label)['v'], "again#{t}:#{i}", "#{label}: drv_rb_text prepared again")
      c.exec('DEALLOCATE drv_rb_text')
      c.prepare('drv_rb_text', "select 'rb#{t}:' || $1::text as v, pg_backend_pid() as pid")
      @queries += 4
    end
  end
end

def main
  failures = []
  queries = 0
  spread = []
  expected = {}
  begin
    setup = connect
    setup.set_notice_receiver { |_| nil }
    setup.exec("drop table if exists #{TABLE}")
    setup.exec("create table #{TABLE} (thread int not null, i int not null, v int not null, how text not null)")
    setup.close
    # A new connection's read may reach a replica that has not replayed the creation yet.
    # Reads go round robin over the replicas: 6 new connections in a row must see it.
    visible = false
    seen = 0
    200.times do
      c = connect
      seen = c.exec_params('select to_regclass($1) is not null as t', [TABLE])[0]['t'] == 't' ? seen + 1 : 0
      c.close
      visible = seen >= 6
      break if visible

      sleep 0.05
    end
    expect(visible, true, "table #{TABLE} visible to new connections")

    workers = []
    threads = (0...THREADS).map do |t|
      Thread.new do
        w = Worker.new(t)
        workers << w
        begin
          w.run
          expected[t] = [w.rows, w.sum]
        rescue StandardError => e
          failures << "thread #{t}: #{describe(e)}"
        ensure
          w.close
        end
      rescue StandardError => e
        failures << "thread #{t}: #{describe(e)}"
      end
    end
    deadline = Time.now + 150
    threads.each_with_index do |th, t|
      next if th.join([deadline - Time.now, 0.1].max)

      failures << "thread #{t}: still running after 150 s"
    end
    workers.each do |w|
      queries += w.queries
      spread << w.pids.size
    end

    if failures.empty?
      # Every committed row, read back on the primary; the rolled-back ones absent.
      c = connect('drv_ruby_check')
      got = {}
      c.exec("/* pgmux:primary */ select thread, count(*) as n, sum(v) as s from #{TABLE} group by thread").each do |r|
        got[r['thread'].to_i] = [r['n'].to_i, r['s'].to_i]
      end
      c.close
      expect(got.sort.to_h, expected.sort.to_h, 'rows committed on the primary per thread [count, sum]')
      queries += 1

      # No server connection kept by a client that is gone: POOL_SIZE new clients each
      # get a transaction at once.
      n = ENV.fetch('PGMUX_POOL_SIZE', '2').to_i
      t0 = Time.now
      conns = (0...n).map { connect('drv_ruby_after') }
      pids = conns.map do |cn|
        cn.exec('begin')
        cn.exec('select pg_backend_pid() as pid')[0]['pid']
      end
      waited = Time.now - t0
      conns.each do |cn|
        cn.exec('commit')
        cn.close
      end
      expect(pids.uniq.size, n, "#{n} new clients each in a transaction: distinct server connections")
      raise WrongResult, format('%d new clients took %.1f s to get a transaction each', n, waited) if waited > 3

      queries += n
    end
  rescue StandardError => e
    failures << "main: #{describe(e)}"
  end
  lo, hi = spread.minmax.map(&:to_i)
  if failures.empty? && ENV['PGMUX_EXPECT_SPREAD'] == '1' && hi < 2
    failures << "no client saw more than one server connection (backends per client #{lo}..#{hi}): " \
                'the workload did not exercise statement reuse across server connections'
  end
  unless failures.empty?
    failures.first(10).each { |f| warn "ruby-pg: FAIL: #{f}" }
    warn "ruby-pg: ... and #{failures.size - 10} more failures" if failures.size > 10
    puts "ruby-pg: FAILED (#{failures.size} failures, #{queries} queries ok); first: #{failures.first.lines.first.strip}"
    return 1
  end
  puts "ruby-pg #{PG::VERSION} (Ruby #{RUBY_VERSION}, libpq #{PG.library_version}): #{queries} queries ok; " \
       "#{THREADS} connections x #{ITERATIONS} iterations: exec_params and exec_prepared (named statements) reads and " \
       "inserts outside transactions, transactions (some rolled back), copy_data in and out, DEALLOCATE and prepare again; " \
       "backends per client #{lo}..#{hi}"
  0
end

if ARGV.first == '--version'
  puts PG::VERSION
  exit 0
end
exit main
