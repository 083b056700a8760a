"""The study's machinery, one concept per module (the public face is `diffseg.experiments`).

- `arms`: an arm (training config + evaluations) and the arm builders of each experiment;
- `catalogue`: every table and figure of paper.md as a named experiment;
- `published`: the numbers paper.md publishes;
- `identity`: the hashes that name trainings, shared stage 1s, base segmentors and evaluations;
- `execution`: one arm run or loaded (training only what is missing), its rows, curves and latencies;
- `store`: the results store and run folders of a profile; loading rows, curves and artifacts;
- `sweep`: all experiments' missing work on worker processes; ``run_experiment``; loading the store.
"""
