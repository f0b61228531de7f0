module github.com/artifactstore/artifactstore

go 1.26.8

require (
	github.com/fxamacker/cbor/v2 v2.10.0 // indirect
	github.com/gowebpki/jcs v1.0.2 // indirect
	github.com/jmoiron/sqlx v1.4.0 // indirect
	github.com/mattn/go-sqlite3 v1.14.53 // indirect
	github.com/oklog/ulid/v2 v2.1.2 // indirect
	github.com/x448/float16 v0.8.4 // indirect
)
