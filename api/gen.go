// Package api holds the artifactstore HTTP API: the one OpenAPI document,
// openapi.yaml, and in api/oas the server and client code that ogen
// generates from it. Nothing under api/oas is edited by hand: change
// openapi.yaml and run `go generate ./api/...`.
package api

import _ "embed"

//go:generate go tool ogen --config ogen.yml --target oas --package oas --clean openapi.yaml

// Spec is openapi.yaml (YAML) as compiled into the binary; the server serves
// it at /openapi.json and renders /docs from it.
//
//go:embed openapi.yaml
var Spec []byte
