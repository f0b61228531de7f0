package s3blob

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

const (
	// DefaultPartSize is the part size of multipart uploads when
	// Config.PartSize is zero; a Writer buffers at most one part.
	DefaultPartSize = 16 << 20
	// MinPartSize and MaxPartSize are S3's limits on a part that is not the
	// last one of a multipart upload.
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
)

// Config says where the store keeps its objects.
type Config struct {
	// Endpoint is the server's base URL; the scheme says whether to use
	// TLS: "http://127.0.0.1:7070", "https://s3.eu-west-1.amazonaws.com".
	Endpoint string
	// Bucket must exist; Open does not create it.
	Bucket string
	// Region signs requests; empty lets the client ask the server.
	Region string
	// AccessKey and SecretKey are static credentials (SigV4).
	AccessKey, SecretKey string
	// Prefix is prepended to every key so that several stores (or tests)
	// can share a bucket. A "/" is appended unless it ends in one.
	Prefix string
	// PartSize is the part size of multipart uploads and so the memory a
	// Writer holds: DefaultPartSize when zero, else MinPartSize..MaxPartSize.
	PartSize uint64
}

// ParseURL parses s3://bucket?endpoint=URL&region=R&prefix=P into a Config,
// taking the credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
// The endpoint parameter is required and must carry its scheme.
func ParseURL(u string) (Config, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return Config{}, fmt.Errorf("s3blob: parse URL: %w", err)
	}
	if pu.Scheme != "s3" {
		return Config{}, fmt.Errorf("s3blob: parse URL %q: scheme must be s3", u)
	}
	if pu.User != nil || pu.Port() != "" || (pu.Path != "" && pu.Path != "/") || pu.Fragment != "" {
		return Config{}, fmt.Errorf("s3blob: parse URL %q: want s3://bucket?endpoint=...&region=...&prefix=...", u)
	}
	cfg := Config{
		Bucket:    pu.Host,
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
	}
	for k, vs := range pu.Query() {
		if len(vs) != 1 {
			return Config{}, fmt.Errorf("s3blob: parse URL %q: parameter %s given %d times", u, k, len(vs))
		}
		switch k {
		case "endpoint":
			cfg.Endpoint = vs[0]
		case "region":
			cfg.Region = vs[0]
		case "prefix":
			cfg.Prefix = vs[0]
		default:
			return Config{}, fmt.Errorf("s3blob: parse URL %q: unknown parameter %q (want endpoint, region, prefix)", u, k)
		}
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// validate checks cfg and reports the first problem.
func (cfg *Config) validate() error {
	if cfg.Bucket == "" {
		return errors.New("s3blob: no bucket")
	}
	if _, _, err := cfg.endpoint(); err != nil {
		return err
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return errors.New("s3blob: no credentials (AccessKey and SecretKey, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	}
	if strings.HasPrefix(cfg.Prefix, "/") {
		return fmt.Errorf("s3blob: prefix %q must not start with /", cfg.Prefix)
	}
	if cfg.PartSize != 0 && (cfg.PartSize < MinPartSize || cfg.PartSize > MaxPartSize) {
		return fmt.Errorf("s3blob: part size %d outside %d..%d", cfg.PartSize, MinPartSize, MaxPartSize)
	}
	return nil
}

// endpoint returns the host[:port] and whether to use TLS.
func (cfg *Config) endpoint() (host string, secure bool, err error) {
	eu, err := url.Parse(cfg.Endpoint)
	if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
		return "", false, fmt.Errorf("s3blob: endpoint %q must be a URL starting with http:// or https://", cfg.Endpoint)
	}
	if (eu.Path != "" && eu.Path != "/") || eu.RawQuery != "" || eu.User != nil {
		return "", false, fmt.Errorf("s3blob: endpoint %q must have no path, query or user", cfg.Endpoint)
	}
	return eu.Host, eu.Scheme == "https", nil
}
