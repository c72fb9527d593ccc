package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"
)

var feedCommand = &command{
	name:  "feed",
	short: "tail the change feed",
	args:  "[--server URL] [--prefix P] [--cursor C|now|beginning] [--once] [--json]",
	summary: "Print committed changes as they happen (\"put KEY VALUE\" or \"delete KEY\" lines), from\n" +
		"now, the beginning of what is retained, or a cursor. With --once it prints what\n" +
		"is there and exits; the cursor to resume from goes to stderr.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		prefix := fs.String("prefix", "", "only keys starting with `P`")
		cursor := fs.String("cursor", "now", "where to start: a `cursor`, now or beginning")
		once := fs.Bool("once", false, "print the changes there are and exit")
		asJSON := fs.Bool("json", false, "print each change as a JSON object")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			cur := *cursor
			defer func() { fmt.Fprintf(c.stderr, "cursor: %s\n", cur) }()
			for {
				wait := 30 * time.Second
				if *once {
					wait = 0
				}
				p, err := cl.Feed(ctx, *prefix, cur, wait, 1000)
				if err != nil {
					if errors.Is(err, context.Canceled) || ctx.Err() != nil {
						return nil
					}
					return err
				}
				cur = p.Cursor
				for _, ch := range p.Changes {
					switch {
					case *asJSON:
						b, _ := json.Marshal(ch)
						fmt.Fprintf(c.stdout, "%s\n", b)
					case ch.Op == "delete":
						fmt.Fprintf(c.stdout, "delete %s\n", ch.Key)
					default:
						fmt.Fprintf(c.stdout, "put %s %s\n", ch.Key, strconv.Quote(string(ch.Value)))
					}
				}
				if *once && len(p.Changes) < 1000 {
					return nil
				}
			}
		}
	},
}
