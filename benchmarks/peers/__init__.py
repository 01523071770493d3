"""workq side by side with the libraries users would pick instead, on the same brokers.

Run on demand (not in CI), after ``pip install -e '.[all,test,peers]'``::

    python -m benchmarks.peers                  # every broker, 3 interleaved repetitions
    python -m benchmarks.peers --quick          # 1 repetition, small N: a smoke run
    python -m benchmarks.peers --broker rabbitmq --reps 5

See docs/performance.md for what each path measures and the latest table.
"""
