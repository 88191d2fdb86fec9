"""The spec's select_notification_path, rule by rule (pure: the unit layer)."""

from __future__ import annotations

import pytest

from precall.dispatcher.channel import Path, Reachability, first_preview_type, select_notification_path

TOKEN = "tok-" + "p" * 40
PHONE = "+15555550100"


def user(pref: str | None = "push_only", token: str | None = TOKEN, push: bool = True, phone: str | None = PHONE,
         opted_out: bool = False) -> Reachability:
    return Reachability(pref, token, push, phone, opted_out)


@pytest.mark.parametrize("reach,path,first", [
    (user(pref="sms_only"), Path.SMS, "preview_sms"),                       # sms_only wins over a token
    (user(pref="push_and_sms"), Path.PUSH_WITH_FALLBACK, "preview_push"),   # Path C
    (user(pref="push_and_sms", token=None), Path.PUSH_WITH_FALLBACK, "preview_sms"),  # its SMS half
    (user(), Path.PUSH, "preview_push"),                                    # Path A
    (user(push=False), Path.SMS, "preview_sms"),                            # push disabled → SMS
    (user(token=None), Path.SMS, "preview_sms"),                            # push_only, no token → SMS
    (user(token=""), Path.SMS, "preview_sms"),                              # an empty token is none
    (user(token=None, opted_out=True), None, None),                         # STOP: no channel
    (user(token=None, phone=None), None, None),                             # nothing at all
    (user(pref=None, token=None), Path.SMS, "preview_sms"),                 # adopted NULL preference
])
def test_the_spec_rules_in_order(reach: Reachability, path: Path | None, first: str | None) -> None:
    assert select_notification_path(reach) is path
    assert first_preview_type(reach) == first
