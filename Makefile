# artifactstore — developer entry points. Every target works on a fresh
# machine with Go 1.26 and a C compiler (cgo, for SQLite).

GO ?= go

.PHONY: dev demo test test-all test-short bench fuzz lint generate check-generated

# Run the reference server on the embedded default (./artifactstore-data,
# 127.0.0.1:8480) with a development token (tenant "dev", token "dev-token")
# and anonymous reads on.
dev:
	ARTIFACTSTORE_TOKENS=dev:dev-token ARTIFACTSTORE_ANON_READ=true $(GO) run ./cmd/artifactstore serve

# Regenerate the ogen server and client from api/openapi.yaml.
generate:
	$(GO) generate ./api/...

# Fail when the generated code is not what the spec and the pinned ogen give.
check-generated: generate
	git diff --exit-code -- api/oas
	test -z "$$(git status --porcelain -- api/oas)"

# Run the store in-process: create a package, put files, finalize, print the
# manifest digest (the HTTP server arrives with the HTTP API).
demo:
	$(GO) run ./examples/inprocess

# Everything CI runs: vet, then every test under the race detector
# (including the SIGKILL crash test and the fuzz seed corpora).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	@if [ -n "$$ARTIFACTSTORE_TEST_POSTGRES" ] && [ -n "$$ARTIFACTSTORE_TEST_S3" ]; then \
		echo "the HTTP suite again, on PostgreSQL + S3"; \
		ARTIFACTSTORE_TEST_BACKEND=postgres+s3 $(GO) test -race -count=1 ./httpserver/; \
	fi
	$(GO) test -count=1 -run 'TestServerMemoryFlat' -v ./cmd/artifactstore
	$(GO) build -o /dev/null ./examples/...
	$(GO) run ./examples/inprocess >/dev/null

# What CI runs: also starts PostgreSQL and versitygw (S3) on loopback and
# requires their suites instead of skipping them (needs root for initdb).
test-all:
	bash .ci/run

test-short:
	$(GO) test -short ./...

# Library benchmarks, each beside its baseline measured in the same run.
bench:
	$(GO) test -run '^$$' -bench 'PutFile' -benchtime 3x -benchmem .
	$(GO) test -run '^$$' -bench 'PutSmallFiles' -benchtime 2000x -benchmem .
	$(GO) test -run '^$$' -bench 'Finalize10000' -benchtime 1x .
	$(GO) test -run '^$$' -bench 'ListPackagesMetadataFilter' ./catalog/sqlite

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzValidatePath -fuzztime 60s .

lint:
	$(GO) vet ./...
	test -z "$$(gofmt -l .)"
