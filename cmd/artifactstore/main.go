// Command artifactstore is the one binary of artifactstore: `serve` runs the
// reference server; the other subcommands are thin clients over HTTP.
//
// Configuration comes from flags, then ARTIFACTSTORE_* environment
// variables, then an optional config file (--config, "name value" lines).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Main runs the command line args with the given output streams and returns
// the exit status. Errors are one line on stderr, never a stack trace.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := rootCommand(stdout, stderr)
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "artifactstore:", err)
		return 2
	}
	if err := root.Run(ctx); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintln(stderr, "artifactstore:", oneLine(describe(err)))
		if _, ok := err.(usageError); ok {
			return 2
		}
		return 1
	}
	return 0
}

func rootCommand(stdout, stderr io.Writer) *ffcli.Command {
	fs := flag.NewFlagSet("artifactstore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &ffcli.Command{
		Name:       "artifactstore",
		ShortUsage: "artifactstore <command> [flags]",
		ShortHelp:  "a content-addressed store for build and data packages",
		FlagSet:    fs,
		Subcommands: []*ffcli.Command{
			serveCommand(stdout, stderr),
			pushCommand(stdout, stderr),
			pullCommand(stdout, stderr),
			manifestCommand(stdout, stderr),
			lsCommand(stdout, stderr),
			eventsCommand(stdout, stderr),
		},
		Exec: func(context.Context, []string) error { return flag.ErrHelp },
	}
}

// ffOptions are the configuration sources of every subcommand: flags, then
// ARTIFACTSTORE_* variables, then the --config file.
func ffOptions() []ff.Option {
	return []ff.Option{
		ff.WithEnvVarPrefix("ARTIFACTSTORE"),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
