"""Intake: where work enters. GitHub signatures (:mod:`.signatures`), normalising deliveries and
interactions (:mod:`.normalize`, pure), reading files (:mod:`.records`), storing them idempotently
(:mod:`.store`, :mod:`.deliveries`), project API keys (:mod:`.apikeys`) and the outbox that
publishes extract tasks and sweeps what stalled (:mod:`.outbox`)."""
