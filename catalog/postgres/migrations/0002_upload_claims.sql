-- Upload claims: the holder that may append to a session, until claim_until
-- (unix milliseconds, like expires_at). Both are NULL while nobody holds a
-- claim; ClaimUpload sets them and AdvanceUpload clears them. claim_holder
-- is compared only for equality, so it keeps the default collation.
ALTER TABLE uploads
	ADD COLUMN claim_holder text,
	ADD COLUMN claim_until  bigint;
