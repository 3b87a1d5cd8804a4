"""Operating the pipeline: row counts (:mod:`.stats`), the cost report (:mod:`.costs`), the
multi-day report (:mod:`.report`), Prometheus metrics (:mod:`.metrics`) and the periodic sweep
(:mod:`.housekeeping`)."""
