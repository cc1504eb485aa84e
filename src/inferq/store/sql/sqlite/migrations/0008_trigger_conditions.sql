-- The webhook triggers' conditions as comparisons instead of IN lists. SQLite builds an IN
-- list of more than two values as a temporary index, and in a trigger's condition builds it
-- again at every run: the job trigger runs at every change of a job's state (its claim,
-- its end), so each job built four such indexes for nothing. Same conditions as 0005.

DROP TRIGGER webhook_job_ended;

CREATE TRIGGER webhook_job_ended AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled'
      OR NEW.state = 'expired')
     AND OLD.state <> 'succeeded' AND OLD.state <> 'failed' AND OLD.state <> 'cancelled'
     AND OLD.state <> 'expired'
     AND NEW.batch_id IS NULL AND NEW.service_class > 0
     AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant = NEW.tenant)
BEGIN
    INSERT INTO webhook_outbox (id, tenant, source, subject_id, origin, state, created_at)
    VALUES ('evt_' || lower(hex(randomblob(12))), NEW.tenant, 'job', NEW.id, NEW.origin,
            NEW.state, (julianday('now') - 2440587.5) * 86400.0);
END;

DROP TRIGGER webhook_batch_ended;

CREATE TRIGGER webhook_batch_ended AFTER UPDATE OF state ON batches
FOR EACH ROW
WHEN (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled'
      OR NEW.state = 'expired')
     AND OLD.state <> 'succeeded' AND OLD.state <> 'failed' AND OLD.state <> 'cancelled'
     AND OLD.state <> 'expired'
     AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant = NEW.tenant)
BEGIN
    INSERT INTO webhook_outbox (id, tenant, source, subject_id, origin, state, created_at)
    VALUES ('evt_' || lower(hex(randomblob(12))), NEW.tenant, 'batch', NEW.id, NEW.dialect,
            NEW.state, (julianday('now') - 2440587.5) * 86400.0);
END;
