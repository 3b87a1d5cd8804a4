"""Extraction: prompts (:mod:`.prompts`) and output schemas (:mod:`.schemas`), the batched attempt
loop with its retry decision (:mod:`.attempts`), pattern extraction (:mod:`.batch`) and its
writes (:mod:`.write`), relationship resolution (:mod:`.relationships`), strategic analysis
(:mod:`.analysis`), and what each task does with a batch (:mod:`.flow`)."""
