package main

import (
	"context"
	"io"

	"github.com/peterbourgon/ff/v3/ffcli"
)

func manifestCommand(stdout, stderr io.Writer) *ffcli.Command {
	var cfg clientConfig
	var asCBOR bool
	fs := newFlagSet("manifest", stderr)
	cfg.register(fs)
	fs.BoolVar(&asCBOR, "cbor", false, "write the CBOR bytes instead of the JSON")
	return &ffcli.Command{
		Name:       "manifest",
		ShortUsage: "artifactstore manifest [--cbor] ID",
		ShortHelp:  "write a finalized package's manifest exactly as served (JCS JSON, or CBOR)",
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("manifest takes one package id")
			}
			c, err := cfg.client()
			if err != nil {
				return err
			}
			var b []byte
			if asCBOR {
				b, err = c.Manifest(ctx, args[0])
			} else {
				b, err = c.ManifestJSON(ctx, args[0])
			}
			if err != nil {
				return err
			}
			_, err = stdout.Write(b)
			return err
		},
	}
}
