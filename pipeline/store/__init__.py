"""The pattern store: embedding models (:mod:`.embedder`) and embedding patterns with their
recurrence validations (:mod:`.embed`)."""
