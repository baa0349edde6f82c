"""The per-shard stages the Snakemake rules run: each reads one shard's plan and writes one file.

One module per job: work.py (what a media stage's worker process runs: the models a config names and
the per-clip work), supervise.py (the parent that runs a media stage over a shard: journal, worker,
retries, progress), assemble.py (the English filter, masking and the shard; the status tables),
clips_report.py (clips.tsv and clips_summary.tsv), status.py (``kebr status``).

asr, audio and visual are independent (they run in parallel, ASR on a GPU node when there is one);
assemble joins them with the English filter and the masking into the HDF5 shard and the shard's
status table; report gathers every shard's status into clips.tsv and clips_summary.tsv.

How a media stage (asr, audio, visual) runs on one shard (``run_media_stage``): what is skipped as
what, retried or fatal is docs/corpora.md "Bad input, crashes and kills"; how the parent, its
supervised worker (kebr/worker.py) and the journal (kebr/journal.py) do it is docs/ARCHITECTURE.md
"How a media stage runs".
"""
