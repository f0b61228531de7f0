package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/artifactstore/artifactstore"
)

func lsCommand(stdout, stderr io.Writer) *ffcli.Command {
	var (
		cfg     clientConfig
		q       artifactstore.PackageQuery
		meta    listFlag
		all     bool
		jsonOut bool
	)
	fs := newFlagSet("ls", stderr)
	cfg.register(fs)
	fs.StringVar(&q.Producer, "producer", "", "only packages of this producer")
	fs.StringVar(&q.Subject, "subject", "", "only packages of this subject")
	fs.StringVar(&q.RetentionClass, "retention-class", "", "only packages of this retention class")
	fs.StringVar(&q.State, "state", "", "open or finalized")
	fs.Var(&meta, "meta", "metadata filter: key (has the key) or key=value (repeatable; all must match)")
	fs.IntVar(&q.Limit, "limit", 50, "packages per page")
	fs.BoolVar(&all, "all", false, "follow the pages to the end")
	fs.BoolVar(&jsonOut, "json", false, "print JSON lines, one package each")
	return &ffcli.Command{
		Name:       "ls",
		ShortUsage: "artifactstore ls [flags]",
		ShortHelp:  "list packages, newest first",
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef("ls takes no arguments")
			}
			c, err := cfg.client()
			if err != nil {
				return err
			}
			q.Metadata = meta
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			if !jsonOut {
				fmt.Fprintln(tw, "ID\tSTATE\tPRODUCER\tSUBJECT\tFILES\tSIZE\tCREATED")
			}
			enc := json.NewEncoder(stdout)
			for {
				page, err := c.ListPackages(ctx, q)
				if err != nil {
					return err
				}
				for _, p := range page.Packages {
					if jsonOut {
						if err := enc.Encode(packageJSON(p)); err != nil {
							return err
						}
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.ID, p.State, p.Producer, p.Subject,
						p.FileCount, humanBytes(p.TotalSize), artifactstore.FormatTime(p.CreatedAt))
				}
				if page.NextCursor == "" || !all {
					if page.NextCursor != "" && !jsonOut {
						defer fmt.Fprintln(stderr, "more packages: use --all")
					}
					break
				}
				q.Cursor = page.NextCursor
			}
			return tw.Flush()
		},
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
