-- When the centre received each policy ack, on the centre's own clock. The rollout driver matches
-- acks against a target's `started` (also the centre's clock) with it, so a gateway whose clock is
-- wrong (an RTC battery gone flat, no NTP behind a village router) is still seen to reject or accept.
-- Rows from before this migration keep NULL; the driver falls back to the gateway's `ts` for them.
ALTER TABLE policy_acks ADD COLUMN received DOUBLE PRECISION;
