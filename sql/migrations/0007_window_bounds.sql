-- Planning's window scan, bounded on both sides in the index.
--
-- 0002 joined precall.settings to read the lookahead, so the upper bound on scheduled_at was a
-- join filter: with 10M calls the planner scanned every pending call after now (measured:
-- 1.5 s a run, bench/planning_cost.py). Scalar subqueries are evaluated once (InitPlans) and
-- become index conditions, so only the ~62 minutes that can be due are read.

-- The pending calls whose preview falls in the planning window at p_now.
CREATE OR REPLACE FUNCTION precall.calls_in_window(p_now timestamptz)
RETURNS TABLE (call_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT c.id
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.status = 'pending'
      AND c.scheduled_at > p_now
      -- 60 min is the largest lead (users_notification_lead_min): a bounded index range.
      AND c.scheduled_at <= p_now + (SELECT s.lookahead FROM precall.settings s) + interval '60 minutes'
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min)
          <= p_now + (SELECT s.lookahead FROM precall.settings s)
$$;

-- These are short OLTP statements: a misestimate (the never-analyzed one-row settings table is
-- guessed at ~840 rows) must not buy a 300 ms JIT compile on every run (measured before this).
ALTER FUNCTION precall.plan_calls(uuid[], timestamptz) SET jit = off;
ALTER FUNCTION precall.claim_due_previews(text, integer) SET jit = off;
ALTER FUNCTION precall.claim_due_calls(text, integer) SET jit = off;
