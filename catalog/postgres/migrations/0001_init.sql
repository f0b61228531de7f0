-- The PostgreSQL catalog schema, the counterpart of catalog/sqlite's.
--
-- Times are unix milliseconds (bigint), as in SQLite. Every text column that
-- is ordered or range-compared (package ids, file paths) has the "C"
-- collation, so ORDER BY and < compare bytewise (UTF-8 byte order is code
-- point order) whatever the database's default collation, and the btree
-- indexes on them serve those comparisons. Columns compared only for
-- equality keep the default collation (deterministic collations compare
-- equal exactly when the bytes are equal).

-- Packages. IDs are caller-chosen, time-ordered strings: newest first is
-- descending id.
CREATE TABLE packages (
	id              text COLLATE "C" PRIMARY KEY,
	tenant          text NOT NULL,
	producer        text NOT NULL,
	subject         text NOT NULL,
	retention_class text NOT NULL,
	state           text NOT NULL CHECK (state IN ('open', 'finalized')),
	file_count      bigint NOT NULL DEFAULT 0,
	total_size      bigint NOT NULL DEFAULT 0,
	created_at      bigint NOT NULL,
	finalized_at    bigint,
	manifest_digest text,
	manifest        bytea
);

-- ListPackages walks one of these backwards by id: the tenant's packages,
-- or those with one filter column fixed.
CREATE INDEX packages_tenant_id ON packages (tenant, id);
CREATE INDEX packages_tenant_producer_id ON packages (tenant, producer, id);
CREATE INDEX packages_tenant_subject_id ON packages (tenant, subject, id);
CREATE INDEX packages_tenant_retention_class_id ON packages (tenant, retention_class, id);
CREATE INDEX packages_tenant_state_id ON packages (tenant, state, id);

CREATE TABLE package_metadata (
	tenant     text NOT NULL,
	package_id text COLLATE "C" NOT NULL REFERENCES packages (id),
	key        text NOT NULL,
	value      bytea NOT NULL, -- any Go string, NUL included
	PRIMARY KEY (package_id, key)
);

-- Metadata filters drive ListPackages from these, backwards by package_id:
-- key=value filters from the first, has-key filters from the second.
CREATE INDEX package_metadata_tenant_key_value ON package_metadata (tenant, key, value, package_id);
CREATE INDEX package_metadata_tenant_key ON package_metadata (tenant, key, package_id);

-- UNIQUE (package_id, path) is also the index ListFiles walks; path has the
-- "C" collation, so the order and the prefix range are bytewise.
CREATE TABLE files (
	id         text COLLATE "C" PRIMARY KEY,
	tenant     text NOT NULL,
	package_id text COLLATE "C" NOT NULL REFERENCES packages (id),
	path       text COLLATE "C" NOT NULL,
	size       bigint NOT NULL,
	digest     text NOT NULL,
	media_type text NOT NULL,
	created_at bigint NOT NULL,
	UNIQUE (package_id, path)
);

CREATE INDEX files_digest ON files (digest);

-- Upload sessions. file_id, package_id and path are set once the session
-- completed into a file.
CREATE TABLE uploads (
	id         text COLLATE "C" PRIMARY KEY,
	tenant     text NOT NULL,
	"offset"   bigint NOT NULL,
	size       bigint NOT NULL,
	digest     text NOT NULL,
	hash_state bytea NOT NULL,
	created_at bigint NOT NULL,
	expires_at bigint NOT NULL,
	file_id    text COLLATE "C",
	package_id text COLLATE "C",
	path       text COLLATE "C"
);

CREATE INDEX uploads_expires_at ON uploads (expires_at);

-- The per-tenant event log. event_heads holds each tenant's newest seq. A
-- change bumps its tenant's row in its own transaction, which keeps that
-- row locked until it commits: the next writer of the tenant waits, so seqs
-- are gapless and in commit order (a sequence would be neither).
CREATE TABLE events (
	tenant     text NOT NULL,
	seq        bigint NOT NULL,
	type       text NOT NULL,
	time       bigint NOT NULL,
	package_id text NOT NULL,
	file_id    text NOT NULL,
	data       bytea NOT NULL,
	PRIMARY KEY (tenant, seq)
);

CREATE TABLE event_heads (
	tenant text PRIMARY KEY,
	seq    bigint NOT NULL
);
