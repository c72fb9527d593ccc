package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"lambdadb/client"
)

var nsCommand = &command{
	name:  "ns",
	short: "show and set namespace quotas (secure mode)",
	summary: "Show the namespaces that have a quota or stored data, and set a namespace's quota:\n" +
		"requests a second, invocations a second, invocations running at once, stored bytes.\n" +
		"A request over a quota gets 429 quota_exceeded. Needs an admin token.",
	sub: []*command{nsQuotaCommand, nsListCommand},
}

var nsQuotaCommand = &command{
	name:  "ns quota",
	short: "show a namespace's quota and usage, or set it",
	args:  "[--server URL] [--token T] NS [--ops-per-s N] [--invocations-per-s N] [--concurrency N] [--stored-bytes N]",
	summary: "Without quota flags, show namespace NS's quota and usage. With some, set them (the\n" +
		"others keep their values; 0 is unlimited). Rates and concurrency hold on each node;\n" +
		"other nodes apply a change within a few seconds. Needs an admin token.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		ops := fs.Int64("ops-per-s", 0, "data requests (kv, feed, query) a second, on each node (0: unlimited)")
		inv := fs.Int64("invocations-per-s", 0, "function invocations a second, on each node (0: unlimited)")
		conc := fs.Int64("concurrency", 0, "invocations running at once, on each node (0: unlimited)")
		stored := fs.Int64("stored-bytes", 0, "bytes of keys and values; writes are refused at or above it (0: unlimited)")
		asJSON := fs.Bool("json", false, "print the answer as JSON")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one NS")
			}
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			for name, v := range map[string]int64{"ops-per-s": *ops, "invocations-per-s": *inv, "concurrency": *conc, "stored-bytes": *stored} {
				if v < 0 {
					return usagef("--%s must not be negative (0 is unlimited)", name)
				}
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			info, err := cl.Quota(ctx, args[0])
			if err != nil {
				return err
			}
			if set["ops-per-s"] || set["invocations-per-s"] || set["concurrency"] || set["stored-bytes"] {
				q := info.Quota
				if set["ops-per-s"] {
					q.OpsPerS = *ops
				}
				if set["invocations-per-s"] {
					q.InvocationsPerS = *inv
				}
				if set["concurrency"] {
					q.Concurrency = *conc
				}
				if set["stored-bytes"] {
					q.StoredBytes = *stored
				}
				if info, err = cl.SetQuota(ctx, args[0], q); err != nil {
					return err
				}
			}
			if *asJSON {
				return json.NewEncoder(c.stdout).Encode(info)
			}
			return printNamespaces(c.stdout, []client.NamespaceInfo{info})
		}
	},
}

var nsListCommand = &command{
	name:    "ns list",
	short:   "list namespaces with their quotas and stored bytes",
	args:    "[--server URL] [--token T]",
	summary: "List the namespaces that have a quota or stored data. Needs an admin token.",
	flags: withClient(func(ctx context.Context, c *cli, cl *client.Client) error {
		list, err := cl.Namespaces(ctx)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			fmt.Fprintln(c.stdout, "no namespace has a quota or data")
			return nil
		}
		return printNamespaces(c.stdout, list)
	}),
}

func printNamespaces(w io.Writer, list []client.NamespaceInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tOPS/S\tINVOCATIONS/S\tCONCURRENCY\tSTORED BYTES\tQUOTA BYTES")
	for _, i := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", i.Namespace, limit(i.Quota.OpsPerS), limit(i.Quota.InvocationsPerS),
			limit(i.Quota.Concurrency), i.Usage.StoredBytes, limit(i.Quota.StoredBytes))
	}
	return tw.Flush()
}

// limit shows a quota; 0 is unlimited.
func limit(v int64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprint(v)
}
