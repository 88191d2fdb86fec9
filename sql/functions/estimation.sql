-- Statistics for experiments (issue 19): the named, standard methods the experiment report uses,
-- in SQL so that a DBA's view and `precall experiments report` show the same figures.
--   * Wilson score interval (no continuity correction);
--   * Newcombe's hybrid score interval for a difference of proportions (method 10, no correction);
--   * the pooled two-proportion z-test, two-sided;
--   * Fisher's exact test, two-sided: the sum of the probabilities of the tables (same margins)
--     no more likely than the observed one (with R's relative tolerance of 1e-7 for ties).
-- z for 95%: 1.959963984540054. Checked against independent computations (math.erfc, exact
-- fractions) in tests/test_statistics.py.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- The complementary error function, to double precision: the Maclaurin series below 2, Lentz's
-- continued fraction above (PostgreSQL has no erf/erfc of its own).
CREATE OR REPLACE FUNCTION precall.erfc(p_x double precision)
 RETURNS double precision
 LANGUAGE plpgsql
 IMMUTABLE STRICT
AS $function$
DECLARE
    v_x double precision := abs(p_x);
    v_sum double precision;
    v_term double precision;
    v_n integer := 0;
    v_f double precision;
    v_c double precision;
    v_d double precision;
    v_delta double precision;
    v_a double precision;
    v_result double precision;
BEGIN
    IF v_x < 2 THEN
        -- erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        v_term := v_x;
        v_sum := v_x;
        LOOP
            v_n := v_n + 1;
            v_term := -v_term * v_x * v_x / v_n;
            v_sum := v_sum + v_term / (2 * v_n + 1);
            EXIT WHEN abs(v_term / (2 * v_n + 1)) < 1e-17 * abs(v_sum) OR v_n > 200;
        END LOOP;
        v_result := 1 - 2 / sqrt(pi()) * v_sum;
    ELSIF v_x > 27 THEN
        v_result := 0;  -- below the smallest double
    ELSE
        -- erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
        v_f := v_x;  -- modified Lentz
        v_c := v_x;
        v_d := 0;
        LOOP
            v_n := v_n + 1;
            v_a := v_n / 2.0;
            v_d := v_x + v_a * v_d;
            v_d := CASE WHEN v_d = 0 THEN 1e300 ELSE 1 / v_d END;
            v_c := v_x + v_a / v_c;
            v_delta := v_c * v_d;
            v_f := v_f * v_delta;
            EXIT WHEN abs(v_delta - 1) < 1e-16 OR v_n > 500;
        END LOOP;
        v_result := exp(-v_x * v_x) / sqrt(pi()) / v_f;
    END IF;
    RETURN CASE WHEN p_x < 0 THEN 2 - v_result ELSE v_result END;
END
$function$;

-- P(Z <= z) for a standard normal Z.
CREATE OR REPLACE FUNCTION precall.normal_cdf(p_z double precision)
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE STRICT
AS $function$
    SELECT 0.5 * precall.erfc(-p_z / sqrt(2.0))
$function$;

-- ln Γ(x) for x > 0: shifted to x ≥ 15, then Stirling's series (error below 1e-15 there).
CREATE OR REPLACE FUNCTION precall.ln_gamma(p_x double precision)
 RETURNS double precision
 LANGUAGE plpgsql
 IMMUTABLE STRICT
AS $function$
DECLARE
    v_x double precision := p_x;
    v_shift double precision := 0;
    v_inv2 double precision;
BEGIN
    IF p_x <= 0 THEN
        RAISE EXCEPTION 'ln_gamma is defined here for x > 0, not %', p_x USING ERRCODE = '22003';
    END IF;
    WHILE v_x < 15 LOOP
        v_shift := v_shift + ln(v_x);
        v_x := v_x + 1;
    END LOOP;
    v_inv2 := 1 / (v_x * v_x);
    RETURN (v_x - 0.5) * ln(v_x) - v_x + 0.5 * ln(2 * pi())
        + (1.0 / 12 - v_inv2 * (1.0 / 360 - v_inv2 * (1.0 / 1260 - v_inv2 * (1.0 / 1680 - v_inv2 / 1188)))) / v_x
        - v_shift;
END
$function$;

-- The Wilson score interval for x successes in n trials (no continuity correction); NULLs for n = 0.
CREATE OR REPLACE FUNCTION precall.wilson_interval(p_x bigint, p_n bigint, p_z double precision DEFAULT 1.959963984540054, OUT lo double precision, OUT hi double precision)
 RETURNS record
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE WHEN p_n > 0 THEN (c - h) / d END, CASE WHEN p_n > 0 THEN (c + h) / d END
    FROM (SELECT p_x::float8 / nullif(p_n, 0) AS p) a,
         LATERAL (SELECT a.p + p_z * p_z / (2 * nullif(p_n, 0)) AS c,
                         p_z * sqrt(a.p * (1 - a.p) / nullif(p_n, 0) + p_z * p_z / (4.0 * nullif(p_n, 0) ^ 2)) AS h,
                         1 + p_z * p_z / nullif(p_n, 0) AS d) b
$function$;

-- Newcombe's hybrid score interval (method 10, no continuity correction) for p1 − p2 from the
-- two Wilson intervals; diff is p1 − p2. NULLs when either n is 0.
CREATE OR REPLACE FUNCTION precall.newcombe_interval(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint, p_z double precision DEFAULT 1.959963984540054, OUT diff double precision, OUT lo double precision, OUT hi double precision)
 RETURNS record
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT p1 - p2,
           p1 - p2 - sqrt((p1 - w1.lo) ^ 2 + (w2.hi - p2) ^ 2),
           p1 - p2 + sqrt((w1.hi - p1) ^ 2 + (p2 - w2.lo) ^ 2)
    FROM (SELECT p_x1::float8 / nullif(p_n1, 0) AS p1, p_x2::float8 / nullif(p_n2, 0) AS p2) p,
         precall.wilson_interval(p_x1, p_n1, p_z) w1, precall.wilson_interval(p_x2, p_n2, p_z) w2
$function$;

-- The pooled two-proportion z-test: the two-sided p-value of p1 = p2 (1 when both rates are 0 or
-- both 1; NULL when either n is 0).
CREATE OR REPLACE FUNCTION precall.two_proportion_p(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint)
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE WHEN p_n1 = 0 OR p_n2 = 0 THEN NULL
                WHEN pooled <= 0 OR pooled >= 1 THEN 1.0
                ELSE precall.erfc(abs(p_x1::float8 / p_n1 - p_x2::float8 / p_n2)
                                  / sqrt(pooled * (1 - pooled) * (1.0 / p_n1 + 1.0 / p_n2)) / sqrt(2.0)) END
    FROM (SELECT (p_x1 + p_x2)::float8 / nullif(p_n1 + p_n2, 0) AS pooled) s
$function$;

-- Fisher's exact test, two-sided, for the 2×2 table [[x1, n1 − x1], [x2, n2 − x2]]: the sum of
-- the hypergeometric probabilities (margins fixed) of every table no more likely than the
-- observed one, a table counting as equally likely within a relative 1e-7 (as R's fisher.test).
CREATE OR REPLACE FUNCTION precall.fisher_exact_p(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint)
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE
AS $function$
    WITH m AS (
        SELECT p_x1 + p_x2 AS k, p_n1 + p_n2 AS n
    ), tables AS (
        -- log P(X = a): C(n1, a) C(n2, k − a) / C(n, k), over the support of a
        SELECT a, precall.ln_gamma(p_n1 + 1.0) - precall.ln_gamma(a + 1.0) - precall.ln_gamma(p_n1 - a + 1.0)
                  + precall.ln_gamma(p_n2 + 1.0) - precall.ln_gamma(m.k - a + 1.0) - precall.ln_gamma(p_n2 - m.k + a + 1.0)
                  - precall.ln_gamma(m.n + 1.0) + precall.ln_gamma(m.k + 1.0) + precall.ln_gamma(m.n - m.k + 1.0) AS lp
        FROM m, generate_series(greatest(0, m.k - p_n2), least(m.k, p_n1)) a
    )
    SELECT CASE WHEN p_n1 = 0 OR p_n2 = 0 THEN NULL
                ELSE least(1.0, sum(exp(t.lp)) FILTER (WHERE t.lp <= o.lp + ln(1 + 1e-7))) END
    FROM tables t, (SELECT lp FROM tables WHERE a = p_x1) o
$function$;

-- The report's p-value for two proportions: the pooled z-test, or Fisher's exact test when any
-- expected cell of the 2×2 table is below 10 (the z-test's normal approximation is poor there).
CREATE OR REPLACE FUNCTION precall.proportions_p(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint)
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE WHEN coalesce(p_n1, 0) = 0 OR coalesce(p_n2, 0) = 0 THEN NULL
                WHEN least(p_n1, p_n2) * least(k, n - k) / n < 10 THEN precall.fisher_exact_p(p_x1, p_n1, p_x2, p_n2)
                ELSE precall.two_proportion_p(p_x1, p_n1, p_x2, p_n2) END
    FROM (SELECT (p_x1 + p_x2)::float8 AS k, (p_n1 + p_n2)::float8 AS n) m
$function$;
