"""KEBR training: pretraining on masked sentiment words, fine-tuning and evaluation (spec 5, 6).

The package imports nothing itself: kebr.train.settings is read by the workflow's DAG (the training
fingerprint, kebr/experiments.py) without loading torch, so the loops are imported from their modules
(``from kebr.train.pretrain import pretrain``).
"""
