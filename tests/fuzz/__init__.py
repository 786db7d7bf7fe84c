"""rnncore's fuzz harness: hypothesis property tests whose every call runs in a worker process.

specs.py       array recipes (A) and calls (Call): plain data, printable as a reproducer
pool.py        the worker processes: a crash or a hang fails a call, never the test process
scenarios.py   multi-step calls through the public API (build, forward, backward, step, save...)
strategies.py  hypothesis strategies: mostly valid calls, then mutated
known.py       the inputs that fail today (issue 11), marked xfail(strict) until fixed
long_run.py    the long budget: python tests/fuzz/long_run.py --calls 100000
sanitize.sh    the test suite under an ASan+UBSan build
"""
