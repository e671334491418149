"""The lab: many runs of the engine and what is learned from them.

Built on the engine below it (tinygrok's top-level modules) and used by the command line above it
(`tinygrok.cli`); nothing here is imported by the engine.

    grid.py          sweep definitions: --grid and --seeds parsed, sweep.json, the runs (Job)
    runner.py        one run as an idempotent task, as a worker runs it
    executors.py     a local process pool or a Dask cluster, and the sweep's status line
    sweep.py         a sweep into its folder: which runs are due, then the executor
    aggregate.py     runs.csv, summary.md and sweep.png of a sweep
    phase.py         phase diagrams: each cell of a grid classified into a learning regime
    experiments.py   the report's comparisons: arms x seeds, run as one sweep
    comparison.py    an experiment's table.md and comparison.png
    analysis.py      `tinygrok analyze`: progress measures over a run's snapshots
"""
