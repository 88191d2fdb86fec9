"""One call that renders everything a preview may send: push title/body and the SMS."""

from __future__ import annotations

import os
from dataclasses import dataclass

from precall.dispatcher.catalog import Catalog
from precall.dispatcher.messages import MessageInput, PushText, Resolved, push_text, resolve
from precall.dispatcher.sms_text import SmsText, build_sms


@dataclass(frozen=True)
class RenderedPreview:
    resolved: Resolved
    push: PushText
    sms: SmsText


class Renderer:
    def __init__(self, catalog: Catalog | None = None, french_typography: bool = False) -> None:
        self.catalog = catalog or Catalog()
        self.french_typography = french_typography

    @classmethod
    def from_env(cls) -> Renderer:
        """PRECALL_FR_TYPOGRAPHY=1: narrow no-break spaces in French push text."""
        return cls(french_typography=os.environ.get("PRECALL_FR_TYPOGRAPHY") == "1")

    def render(self, inp: MessageInput) -> RenderedPreview:
        r = resolve(self.catalog, inp)
        return RenderedPreview(r, push_text(self.catalog, r, self.french_typography), build_sms(self.catalog, r))
