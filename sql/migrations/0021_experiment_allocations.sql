-- Every allocation of an experiment's arms: the shares at creation, then each daily Thompson
-- re-weighting (the target shares of users not yet assigned, and each arm's probability of
-- being the best that led to them).
CREATE TABLE precall.experiment_allocations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id bigint NOT NULL REFERENCES precall.experiments (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    shares jsonb NOT NULL,
    p_best jsonb
);
CREATE INDEX experiment_allocations_experiment_idx ON precall.experiment_allocations (experiment_id, at);
INSERT INTO precall.experiment_allocations (experiment_id, at, shares)
SELECT e.id, e.created_at, (SELECT jsonb_object_agg(a.name, a.share) FROM precall.experiment_arms a WHERE a.experiment_id = e.id)
FROM precall.experiments e;
