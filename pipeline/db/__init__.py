"""Database access: engine and sessions (:mod:`.engine`), the model (:mod:`.models`)."""
