"""One call that renders everything a preview may send: push title/body and the SMS."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

from precall.config import fr_typography
from precall.templates.catalog import Catalog
from precall.templates.messages import MessageInput, PushText, Resolved, push_text, resolve
from precall.templates.sms_text import SmsText, build_sms


class RenderedPreview:
    """Each text is rendered when first asked for: a push never pays for the SMS variants."""

    def __init__(self, resolved: Resolved, catalog: Catalog, french_typography: bool) -> None:
        self.resolved = resolved
        self._catalog = catalog
        self._french_typography = french_typography

    @cached_property
    def push(self) -> PushText:
        return push_text(self._catalog, self.resolved, self._french_typography)

    @cached_property
    def sms(self) -> SmsText:
        return build_sms(self._catalog, self.resolved)


class Renderer:
    def __init__(self, catalog: Catalog | None = None, french_typography: bool = False) -> None:
        self.catalog = catalog or Catalog()
        self.french_typography = french_typography

    @classmethod
    def from_env(cls) -> Renderer:
        """PRECALL_FR_TYPOGRAPHY=1: narrow no-break spaces in French push text."""
        return cls(french_typography=fr_typography())

    def render(self, inp: MessageInput, ids: Mapping[str, object] | None = None) -> RenderedPreview:
        """`ids` name the preview in any warning the rendering logs."""
        return RenderedPreview(resolve(self.catalog, inp, ids), self.catalog, self.french_typography)
