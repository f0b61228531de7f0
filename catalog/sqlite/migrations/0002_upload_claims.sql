-- Upload claims: the holder that may append to a session, until claim_until
-- (unix milliseconds, like expires_at). Both are NULL while nobody holds a
-- claim; ClaimUpload sets them and AdvanceUpload clears them.
ALTER TABLE uploads ADD COLUMN claim_holder TEXT;
ALTER TABLE uploads ADD COLUMN claim_until INTEGER;
