"""Missed-delivery recovery on plain values: which events to redeliver, ``--since``, the hook
list setting and the beat entry."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.errors import InvalidValueError
from pipeline.github.client import HookDelivery
from pipeline.github.recover import DEFAULT_SINCE, failed_guids, missed, parse_since
from pipeline.settings import Settings
from pipeline.settings_github import HookRef, parse_hooks

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def _attempt(id_: int, guid: str, minutes: int, status_code: int) -> HookDelivery:
    return HookDelivery(
        id=id_,
        guid=guid,
        delivered_at=T0 + dt.timedelta(minutes=minutes),
        redelivery=id_ > 10,
        status_code=status_code,
    )


ATTEMPTS = [
    _attempt(1, "ok-later", 0, 502),
    _attempt(11, "ok-later", 30, 200),  # a later attempt got through: nothing to do
    _attempt(2, "lost", 1, 0),  # timed out, then a redelivery failed too
    _attempt(12, "lost", 20, 500),
    _attempt(3, "stored", 2, 500),  # failed at GitHub's end, but we stored it
    _attempt(4, "fine", 3, 204),
    _attempt(5, "lost-once", 4, 404),
]


def test_missed_picks_the_latest_attempt_of_each_failed_unstored_event() -> None:
    assert failed_guids(ATTEMPTS) == {"lost", "stored", "lost-once"}
    picks = missed(ATTEMPTS, {"stored", "not-listed"})
    assert [(a.guid, a.id) for a in picks] == [("lost-once", 5), ("lost", 12)]
    assert missed(ATTEMPTS, {"lost", "stored", "lost-once"}) == []
    assert missed([], set()) == []


def test_missed_breaks_ties_on_the_attempt_id() -> None:
    same_time = [_attempt(7, "g", 0, 500), _attempt(9, "g", 0, 500), _attempt(8, "g", 0, 500)]
    assert [a.id for a in missed(same_time, ())] == [9]


def test_delivery_from_githubs_json() -> None:
    item = {
        "id": 12345678, "guid": "0b989ba4-242f-11e5-81e1-c7b6966d2516",
        "delivered_at": "2019-06-03T00:57:16Z", "redelivery": False, "duration": 0.27,
        "status": "OK", "status_code": 200, "event": "issues", "action": "opened",
        "installation_id": 123, "repository_id": 456,
    }  # fmt: skip
    got = HookDelivery.from_json(item)
    assert got.id == 12345678 and got.guid.startswith("0b989ba4") and got.status_code == 200
    assert got.delivered_at == dt.datetime(2019, 6, 3, 0, 57, 16, tzinfo=dt.UTC)
    assert HookDelivery.from_json({**item, "status_code": None}).status_code == 0
    with pytest.raises(KeyError):
        HookDelivery.from_json({"id": 1})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, T0 - DEFAULT_SINCE),
        ("3d", T0 - dt.timedelta(days=3)),
        ("12h", T0 - dt.timedelta(hours=12)),
        ("30m", T0 - dt.timedelta(minutes=30)),
        ("90s", T0 - dt.timedelta(seconds=90)),
        ("2025-02-28T06:00:00Z", dt.datetime(2025, 2, 28, 6, tzinfo=dt.UTC)),
        ("2025-02-28T08:00:00+02:00", dt.datetime(2025, 2, 28, 6, tzinfo=dt.UTC)),
        ("2025-02-28", dt.datetime(2025, 2, 28, tzinfo=dt.UTC)),
    ],
)
def test_parse_since(value: str | None, expected: dt.datetime) -> None:
    assert parse_since(value, now=T0) == expected


@pytest.mark.parametrize("value", ["yesterday", "3w", "-1d", ""])
def test_parse_since_refuses_other_shapes(value: str) -> None:
    with pytest.raises(InvalidValueError, match="duration"):
        parse_since(value, now=T0)


def test_hooks_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PATTERNS_GITHUB_HOOKS", "repo:acme/api.js:123, org:acme:456,app,app")
    hooks = Settings().github_hooks
    assert hooks == (HookRef("repo", "acme/api.js", 123), HookRef("org", "acme", 456),
                     HookRef("app"))  # fmt: skip
    assert [h.deliveries_path for h in hooks] == [
        "/repos/acme/api.js/hooks/123/deliveries",
        "/orgs/acme/hooks/456/deliveries",
        "/app/hook/deliveries",
    ]
    assert [str(h) for h in hooks] == ["repo:acme/api.js:123", "org:acme:456", "app"]
    assert Settings(github_hooks="").github_hooks == ()  # type: ignore[call-arg]


@pytest.mark.parametrize("spec", ["repo:acme:1", "org:acme/api:1", "repo:a/b:x", "hook:a:1"])
def test_hooks_setting_refuses_bad_items(spec: str) -> None:
    with pytest.raises(ValueError, match="bad hook"):
        parse_hooks(spec)


def test_beat_recovers_hourly_only_when_configured(clean_env: pytest.MonkeyPatch) -> None:
    from workers.app import BEAT_SCHEDULE, TASK_ROUTES, beat_schedule

    base = {"github_token": "t", "github_hooks": "repo:acme/api:1", "verdicts_poll_interval_s": 0}
    entry = beat_schedule(Settings(**base))["github-recover"]  # type: ignore[arg-type]
    assert entry == {"task": "patterns.github_recover", "schedule": 3600.0}
    assert TASK_ROUTES["patterns.github_recover"] == TASK_ROUTES["patterns.sweep_outbox"]
    for off in ({"github_token": None}, {"github_hooks": ""},
                {"github_recover_interval_s": 0}):  # fmt: skip
        assert beat_schedule(Settings(**{**base, **off})) == BEAT_SCHEDULE  # type: ignore[arg-type]
    every_5 = beat_schedule(Settings(**base, github_recover_interval_s=300))  # type: ignore[arg-type]
    assert every_5["github-recover"]["schedule"] == 300.0


def test_beat_polls_verdicts_with_a_token(clean_env: pytest.MonkeyPatch) -> None:
    from workers.app import BEAT_SCHEDULE, TASK_ROUTES, beat_schedule

    entry = beat_schedule(Settings(github_token="t"))["github-verdicts"]  # type: ignore[call-arg]
    assert entry == {"task": "patterns.github_verdicts", "schedule": 900.0}
    assert TASK_ROUTES["patterns.github_verdicts"] == {"queue": "housekeeping"}
    assert beat_schedule(Settings(github_token=None)) == BEAT_SCHEDULE  # type: ignore[call-arg]
    off = Settings(github_token="t", verdicts_poll_interval_s=0)  # type: ignore[call-arg]
    assert "github-verdicts" not in beat_schedule(off)
