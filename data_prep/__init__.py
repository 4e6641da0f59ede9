"""Corpus preparation: raw biomedical text in, packed WordPiece examples in Arrow shards out.

Every stage is a plain function or small class over plain Python data so that a later parallel driver can
run the per-file work (`pipeline.process_file`) in worker processes without changing the stages.
"""
