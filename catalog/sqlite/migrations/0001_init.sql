-- Packages. IDs are caller-chosen, time-ordered strings: newest first is
-- descending id. Times are unix milliseconds.
CREATE TABLE packages (
	id              TEXT PRIMARY KEY,
	tenant          TEXT NOT NULL,
	producer        TEXT NOT NULL,
	subject         TEXT NOT NULL,
	retention_class TEXT NOT NULL,
	state           TEXT NOT NULL CHECK (state IN ('open', 'finalized')),
	file_count      INTEGER NOT NULL DEFAULT 0,
	total_size      INTEGER NOT NULL DEFAULT 0,
	created_at      INTEGER NOT NULL,
	finalized_at    INTEGER,
	manifest_digest TEXT,
	manifest        BLOB
);

-- ListPackages walks one of these backwards by id: the tenant's packages,
-- or those with one filter column fixed.
CREATE INDEX packages_tenant_id ON packages (tenant, id);
CREATE INDEX packages_tenant_producer_id ON packages (tenant, producer, id);
CREATE INDEX packages_tenant_subject_id ON packages (tenant, subject, id);
CREATE INDEX packages_tenant_retention_class_id ON packages (tenant, retention_class, id);
CREATE INDEX packages_tenant_state_id ON packages (tenant, state, id);

CREATE TABLE package_metadata (
	tenant     TEXT NOT NULL,
	package_id TEXT NOT NULL REFERENCES packages (id),
	key        TEXT NOT NULL,
	value      TEXT NOT NULL,
	PRIMARY KEY (package_id, key)
) WITHOUT ROWID;

-- Metadata filters drive ListPackages from these, backwards by package_id:
-- key=value filters from the first, has-key filters from the second.
CREATE INDEX package_metadata_tenant_key_value ON package_metadata (tenant, key, value, package_id);
CREATE INDEX package_metadata_tenant_key ON package_metadata (tenant, key, package_id);

-- Paths compare with the BINARY collation (memcmp), so ORDER BY path is
-- bytewise; UNIQUE (package_id, path) is also the index ListFiles walks.
CREATE TABLE files (
	id         TEXT PRIMARY KEY,
	tenant     TEXT NOT NULL,
	package_id TEXT NOT NULL REFERENCES packages (id),
	path       TEXT NOT NULL,
	size       INTEGER NOT NULL,
	digest     TEXT NOT NULL,
	media_type TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	UNIQUE (package_id, path)
);

CREATE INDEX files_digest ON files (digest);

-- Upload sessions. file_id, package_id and path are set once the session
-- completed into a file.
CREATE TABLE uploads (
	id         TEXT PRIMARY KEY,
	tenant     TEXT NOT NULL,
	"offset"   INTEGER NOT NULL,
	size       INTEGER NOT NULL,
	digest     TEXT NOT NULL,
	hash_state BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	file_id    TEXT,
	package_id TEXT,
	path       TEXT
);

CREATE INDEX uploads_expires_at ON uploads (expires_at);

-- The per-tenant event log. event_heads holds each tenant's newest seq; a
-- change bumps it in its own transaction, so seqs are gapless and in commit
-- order.
CREATE TABLE events (
	tenant     TEXT NOT NULL,
	seq        INTEGER NOT NULL,
	type       TEXT NOT NULL,
	time       INTEGER NOT NULL,
	package_id TEXT NOT NULL,
	file_id    TEXT NOT NULL,
	data       BLOB NOT NULL,
	PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;

CREATE TABLE event_heads (
	tenant TEXT PRIMARY KEY,
	seq    INTEGER NOT NULL
) WITHOUT ROWID;
