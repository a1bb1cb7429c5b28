#!/usr/bin/env python3
"""The peer of Tally's reconciliation benchmark: DuckDB loads the same CSV
exports and computes the same rules in SQL (src/reconcile/mod.rs).

Usage: python3 benches/duckdb_rules.py DIR

DIR holds round1/<STATE>.csv and round2/<STATE>.csv, as written by
`cargo bench --bench reconcile` (tally::generate::Scenario::write_to). The
rules are evaluated for round 2 relative to round 1 ("latest" = round 2; a
state's most recent mention of a key is its round-2 rows, or its round-1 rows
if round 2 does not list the key). Canonical keys: Cyrillic look-alikes
(А В Е К М Н О Р С Т Х, either case) to Latin, upper case, spaces and hyphens
removed; this is all of the canonical rule that the generated exports need
(no NFKC, no other dashes or spaces).

Two-round SQL versions of the engine's history-dependent records (vanished,
transfer, disposal) agree with it for every history the generator produces;
they are not a general replacement for the engine.

Prints one line per alert kind ("kind NAME COUNT") and timings
("load_seconds", "canon_seconds", "rules_seconds", "update_seconds") and the
peak RSS ("peak_rss_mb"). Exits 0 with "skipped" if duckdb is not installed.
"""

import os
import resource
import sys
import time

try:
    import duckdb
except ImportError:
    print("duckdb_rules: the duckdb module is not installed (pip install duckdb): skipped")
    sys.exit(0)

HELD = "('in_service', 'in_storage')"

# ASCII spellings (byte length = character length) take the fast path:
# DuckDB's translate() is about ten times slower than replace().
CANON_MACRO = """
CREATE OR REPLACE MACRO canon(x) AS
    CASE WHEN strlen(x) = length(x) THEN upper(replace(replace(x, '-', ''), ' ', ''))
         ELSE upper(translate(x, 'АВЕКМНОРСТХавекмнорстх -', 'ABEKMHOPCTXABEKMHOPCTX'))
    END
"""


def read_csv(path_glob):
    cols = "{'model': 'VARCHAR', 'serial': 'VARCHAR', 'status': 'VARCHAR', 'site': 'VARCHAR', 'counterparty': 'VARCHAR'}"
    return f"""
        SELECT regexp_extract(filename, '([A-Z]{{3}})\\.csv$', 1) AS state,
               model, serial, status, site, counterparty
        FROM read_csv('{path_glob}', header = true, columns = {cols},
                      filename = true, quote = '"', escape = '"')
    """


def canon_select(table):
    return f"""
        SELECT state, canon(model) || '/' || canon(serial) AS k, status, counterparty
        FROM {table}
    """


RULES = f"""
WITH
held2 AS (SELECT DISTINCT k, state FROM k2 WHERE status IN {HELD}),
held1 AS (SELECT DISTINCT k, state FROM k1 WHERE status IN {HELD}),
listed2 AS (SELECT DISTINCT k, state FROM k2),
holders2 AS (SELECT k, count(*) AS n FROM held2 GROUP BY k),
vanished AS (
    SELECT h.k, h.state FROM held1 h
    WHERE NOT EXISTS (SELECT 1 FROM listed2 l WHERE l.k = h.k AND l.state = h.state)
),
latest AS (
    SELECT k, state, status, counterparty FROM k2
    UNION ALL
    SELECT a.k, a.state, a.status, a.counterparty FROM k1 a
    WHERE NOT EXISTS (SELECT 1 FROM listed2 l WHERE l.k = a.k AND l.state = a.state)
),
disposed AS (
    SELECT DISTINCT k FROM (SELECT k, status FROM k1 UNION ALL SELECT k, status FROM k2)
    WHERE status IN ('destroyed', 'expended')
)
SELECT 'duplicate_in_snapshot' AS kind, count(*) AS n
    FROM (SELECT state, k FROM k2 GROUP BY state, k HAVING count(*) > 1)
UNION ALL
SELECT 'held_by_several_states', count(*) FROM holders2 WHERE n >= 2
UNION ALL
SELECT 'unaccounted_disappearance', count(*) FROM vanished v
    WHERE NOT EXISTS (SELECT 1 FROM holders2 h WHERE h.k = v.k)
UNION ALL
SELECT 'undeclared_transfer', count(*) FROM vanished v
    WHERE EXISTS (SELECT 1 FROM holders2 h WHERE h.k = v.k)
UNION ALL
SELECT 'transfer_not_received', count(*) FROM (
    SELECT DISTINCT k, state, counterparty FROM latest WHERE status = 'transferred_out'
) t
    WHERE NOT EXISTS (SELECT 1 FROM held2 h WHERE h.k = t.k AND h.state = t.counterparty)
UNION ALL
SELECT 'disposed_item_reappears', count(*) FROM disposed d
    WHERE EXISTS (SELECT 1 FROM holders2 h WHERE h.k = d.k)
UNION ALL
SELECT 'reported_lost', count(*) FROM (SELECT DISTINCT k, state FROM latest WHERE status = 'lost')
"""


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    root = sys.argv[1]
    for rnd in (1, 2):
        if not os.path.isdir(os.path.join(root, f"round{rnd}")):
            sys.exit(f"duckdb_rules: {root}/round{rnd} is missing")
    con = duckdb.connect()  # in memory; all cores
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"duckdb {duckdb.__version__}, threads {threads}")
    con.execute(CANON_MACRO)

    # Load: parse every CSV into a table (raw strings, as exported).
    t = time.perf_counter()
    for rnd in (1, 2):
        con.execute(f"CREATE TABLE r{rnd} AS {read_csv(os.path.join(root, f'round{rnd}', '*.csv'))}")
    load = time.perf_counter() - t
    rows = [con.execute(f"SELECT count(*) FROM r{rnd}").fetchone()[0] for rnd in (1, 2)]

    # Canonical keys, then the rules.
    t = time.perf_counter()
    for rnd in (1, 2):
        con.execute(f"CREATE TABLE k{rnd} AS {canon_select(f'r{rnd}')}")
    canon = time.perf_counter() - t
    t = time.perf_counter()
    counts = dict(con.execute(RULES).fetchall())
    rules = time.perf_counter() - t

    # One new snapshot arrives (the last state's round 2): DuckDB has no
    # incremental path, so it replaces that state's rows and reruns the rules.
    last = sorted(os.listdir(os.path.join(root, "round2")))[-1]
    state = last[:3]
    t = time.perf_counter()
    con.execute("DELETE FROM k2 WHERE state = ?", [state])
    con.execute(f"INSERT INTO k2 {canon_select('(' + read_csv(os.path.join(root, 'round2', last)) + ')')}")
    again = dict(con.execute(RULES).fetchall())
    update = time.perf_counter() - t
    if again != counts:
        sys.exit(f"duckdb_rules: reloading {state} changed the counts: {counts} vs {again}")

    print(f"rows round1 {rows[0]} round2 {rows[1]}")
    for kind, n in counts.items():
        print(f"kind {kind} {n}")
    print(f"load_seconds {load:.3f}")
    print(f"canon_seconds {canon:.3f}")
    print(f"rules_seconds {rules:.3f}")
    print(f"update_seconds {update:.3f}  (replace {state}'s round 2 and rerun the rules)")
    print(f"peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
