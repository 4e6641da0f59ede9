"""Corpus text readers shared by data preparation and fine-tuning.

The PubMed XML reader, its `Document` record and `CorpusFileError`, gzip decompression, text cleaning
and the sentence splitter live in the library rather than in data_prep/ because fine-tuning's predict and
embed commands read PubMed XML and split sentences too, and `finetune` may import only `biobert`.
These modules import nothing from data_prep/, pretrain/ or finetune/.
"""
