package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
)

func eventsCommand(stdout, stderr io.Writer) *ffcli.Command {
	var (
		cfg    clientConfig
		since  uint64
		limit  int
		follow bool
	)
	fs := newFlagSet("events", stderr)
	cfg.register(fs)
	fs.Uint64Var(&since, "since", 0, "print events after this seq (0: from the start)")
	fs.IntVar(&limit, "limit", 100, "events per request")
	fs.BoolVar(&follow, "follow", false, "keep long-polling for new events")
	return &ffcli.Command{
		Name:       "events",
		ShortUsage: "artifactstore events [--since N] [--follow]",
		ShortHelp:  "print the tenant's events as JSON lines",
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef("events takes no arguments")
			}
			c, err := cfg.client()
			if err != nil {
				return err
			}
			for {
				wait := time.Duration(0)
				if follow {
					wait = 30 * time.Second
				}
				page, err := c.Events(ctx, since, limit, wait)
				if err != nil {
					if follow && ctx.Err() != nil {
						return nil // interrupted: a normal end of --follow
					}
					return err
				}
				for _, e := range page.Events {
					b, err := e.MarshalJCS()
					if err != nil {
						return err
					}
					fmt.Fprintf(stdout, "%s\n", b)
				}
				since = page.Next
				if !follow && len(page.Events) == 0 {
					return nil
				}
			}
		},
	}
}
