"""Builds the configured push and SMS senders; `log` only when explicitly chosen."""

from __future__ import annotations

from precall.config import Config
from precall.dispatcher.providers.base import PushSender, SmsSender
from precall.dispatcher.providers.fcm import FcmPushSender
from precall.dispatcher.providers.fcm_direct import FcmDirectSender
from precall.dispatcher.providers.log import LogPushSender, LogSmsSender
from precall.dispatcher.providers.twilio_sms import TwilioSmsSender


def push_sender(config: Config) -> PushSender:
    if config.push_provider == "log":
        return LogPushSender()
    transport = FcmDirectSender if config.fcm_transport == "direct" else FcmPushSender
    return transport(config.google_application_credentials, config.fcm_base_url, config.fcm_timeout_s,
                     config.max_in_flight)


def sms_sender(config: Config) -> SmsSender:
    if config.sms_provider == "log":
        return LogSmsSender()
    return TwilioSmsSender(config.twilio_account_sid, config.twilio_auth_token, config.twilio_from,
                           config.twilio_base_url, config.twilio_status_callback_url, config.twilio_timeout_s)
