module github.com/artifactstore/artifactstore

go 1.26.8

require (
	github.com/fxamacker/cbor/v2 v2.10.0
	github.com/gowebpki/jcs v1.0.2
	github.com/jmoiron/sqlx v1.4.0
	github.com/mattn/go-sqlite3 v1.14.53
	github.com/oklog/ulid/v2 v2.1.2
)

require github.com/x448/float16 v0.8.4 // indirect
