package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/client"
)

// clientConfig holds the flags every client command shares.
type clientConfig struct {
	url   string
	token string
}

func (c *clientConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8480", "server URL (ARTIFACTSTORE_URL)")
	fs.StringVar(&c.token, "token", "", "bearer token (ARTIFACTSTORE_TOKEN)")
	fs.String("config", "", "config file of \"flag value\" lines")
}

func (c *clientConfig) client() (*client.Client, error) {
	var opts []client.Option
	if c.token != "" {
		opts = append(opts, client.WithToken(c.token))
	}
	return client.New(c.url, opts...)
}

// newFlagSet makes a subcommand's flag set writing usage to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("artifactstore "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// describe turns an error into the one line the CLI prints: the problem's
// title and detail for server errors, the cause for others.
func describe(err error) string {
	var e *artifactstore.Error
	if errors.As(err, &e) && e.Kind != artifactstore.Internal {
		msg := e.Kind.String()
		if e.Detail != "" {
			msg += ": " + e.Detail
		}
		return msg
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		cause := ue.Err
		for u := errors.Unwrap(cause); u != nil; u = errors.Unwrap(cause) {
			cause = u
		}
		if u, perr := url.Parse(ue.URL); perr == nil {
			return fmt.Sprintf("cannot reach the server at %s://%s: %v", u.Scheme, u.Host, cause)
		}
	}
	return err.Error()
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// metaFlag collects repeatable key=value flags.
type metaFlag map[string]string

func (m metaFlag) String() string { return "" }

func (m metaFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	m[k] = val
	return nil
}

// listFlag collects repeatable string flags.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
