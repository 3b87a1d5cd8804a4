"""Extraction quality: the gold format and ``patterns eval`` metrics (:mod:`.gold`,
:mod:`.metrics`, :mod:`.evaluate`), and the label-free signals computed on every extraction
(:mod:`.signals`)."""
