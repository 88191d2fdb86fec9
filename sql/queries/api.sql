-- The HTTP API's statements (api/), reached through the typed functions of api/store.py.
-- Each block starts with `-- name --`.

-- session_limits --
-- Every pooled connection's bounds (PRECALL_DB_STATEMENT_TIMEOUT_MS, PRECALL_DB_LOCK_TIMEOUT_MS).
SELECT set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false)

-- user_exists --
SELECT 1 FROM users WHERE id = %(user_id)s

-- register_device --
SELECT precall.register_device(%(user_id)s, %(fcm_token)s, %(platform)s, %(push_enabled)s)

-- unregister_device --
SELECT precall.unregister_device(%(user_id)s, %(fcm_token)s)

-- preferences --
SELECT notification_pref::text, notification_lead_min::int,
       coalesce(phone_number, '') <> '' AS phone_number_on_file, coalesce(sms_opted_out, false) AS sms_opted_out
FROM users WHERE id = %(user_id)s

-- devices --
SELECT platform, push_enabled, last_seen_at FROM precall.device_list(%(user_id)s)

-- phone_on_file --
SELECT phone_number FROM users WHERE id = %(user_id)s

-- update_preferences --
-- Unsent previews are re-planned by the users trigger (_500_replan_previews).
UPDATE users SET notification_pref = coalesce(%(pref)s, notification_pref),
                 notification_lead_min = coalesce(%(lead_min)s, notification_lead_min)
WHERE id = %(user_id)s

-- record_push_receipt --
-- A bearer receipt names the user; a receipt token names the device (user_id NULL). With the
-- preview's receipt times after it: one round trip per receipt.
SELECT outcome, delivered_at, opened_at, late
FROM precall.push_receipt(%(id)s, %(device_id)s::bigint, %(event)s, coalesce(%(at)s, clock_timestamp()),
                          %(user_id)s::uuid)

-- record_sms_status --
SELECT precall.record_sms_status(%(sid)s, %(status)s, %(error_code)s, %(done_at)s)

-- record_inbound_sms --
SELECT precall.record_inbound_sms(%(sid)s, %(from_number)s, %(body)s)

-- history_entries --
SELECT * FROM precall.history_entries(%(user_id)s, %(limit)s, %(offset)s)

-- apply_call_action --
-- A bearer caller names the user; a receipt-token caller the device (user_id NULL).
SELECT * FROM precall.apply_call_action(%(id)s, %(action)s, %(user_id)s::uuid, %(device_id)s::bigint)

-- receive_sms --
SELECT * FROM precall.receive_sms(%(sid)s, %(from_number)s, %(body)s)

-- record_sms_reply --
SELECT precall.record_sms_reply(%(sid)s, %(reply)s, %(body)s, %(encoding)s, %(segments)s, %(cost)s, %(currency)s)

-- record_call_outcome --
SELECT * FROM precall.record_call_outcome(%(call_id)s, %(status)s, %(answered_by)s, %(at)s)

-- snooze_minutes --
-- What the SMS reply hint says: the API's answers, `precall send --dry-run` (names are global).
SELECT snooze_minutes FROM precall.settings
