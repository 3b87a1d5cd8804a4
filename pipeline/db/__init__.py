"""Database access: engine, sessions and migrations (:mod:`.engine`), the tables
(:mod:`.models`, one module per side of the pipeline) and the status enums with their CHECK
constraints (:mod:`.status`)."""
