"""GitHub's REST API (:mod:`.client`) and feedback comments listing similar earlier patterns
(:mod:`.feedback`)."""
