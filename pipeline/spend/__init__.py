"""Spend: which model does a piece of work and what it may cost. Pure routing (:mod:`.routing`),
placing a batch with one budget snapshot (:mod:`.placement`), the daily budget's caps and
admission (:mod:`.budget`), reservations that cannot overshoot (:mod:`.reservations`) and the
price table (:mod:`.pricing`)."""
