"""Figures people look at: what happened to the clips, what the features look like, how training went,
and the paper's tables and Fig. 4 beside our numbers. The Snakemake report (rules/report.smk) shows them.
One module per kind: clips.py (clips, durations, features of a dataset), training.py (a run's curves),
tables.py (a table and the g sweep beside the paper), html.py (the pages), style.py (what they share).

Every figure is written twice from one drawing, ``<prefix>.png`` (the report, the README) and
``<prefix>.svg`` (print; its text stays text), in greys with line styles, markers and hatches so that
it reads on a greyscale printout, and every axis names its unit. A figure draws what the files hold
and says so where something is missing (a pretraining run has no valid split; a clips.tsv without
``duration_s`` has no clip durations): nothing is estimated or filled in.

What each figure reads:
- clips, durations: ``clips.tsv`` (clip_id, status, reason, shard; ``kind``, ``missing`` and
  ``duration_s`` when the stages write them); without ``duration_s`` the durations figure shows the
  seconds of features the shards hold per clip instead, and says so;
- features: the dataset's HDF5 shards (``kebr.shards``): per-column mean and std over real frames,
  and per clip the share of sampled frames with a face (the ``face_present`` column);
- training: a run's ``log.csv`` (one row per epoch, ``kebr.train.loop.fit``) and, when the run writes
  one, ``steps.csv`` (one row per logged step: ``epoch`` and any of the loss terms);
- tables: a table's CSV (``kebr.tables.build_table``); a g sweep's rows carry their ``corpus`` and ``g``.

Each ``plot_*`` function returns the numbers it drew, so tests compare them with the files they
came from.
"""
