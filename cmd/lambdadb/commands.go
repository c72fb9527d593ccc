package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"lambdadb/client"
)

// defaultServer is the server client commands talk to without --server
// or $LAMBDADB_SERVER.
const defaultServer = "http://127.0.0.1:7070"

// serverFlag defines --server on fs and returns a function that builds the
// client from it.
func (c *cli) serverFlag(fs *flag.FlagSet) func() (*client.Client, error) {
	def := c.getenv("LAMBDADB_SERVER")
	if def == "" {
		def = defaultServer
	}
	addr := fs.String("server", def, "server `URL`; $LAMBDADB_SERVER sets the default")
	token := fs.String("token", c.getenv("LAMBDADB_TOKEN"), "access `token` for a secure-mode cluster; $LAMBDADB_TOKEN sets the default (prefer it: a flag shows in the process list)")
	ns := fs.String("namespace", c.getenv("LAMBDADB_NAMESPACE"), "act in `namespace` NS (admin tokens only; others act in their own); $LAMBDADB_NAMESPACE sets the default")
	caOpt := c.cacertFlag(fs)
	return func() (*client.Client, error) {
		u := *addr
		if !strings.Contains(u, "://") {
			u = "http://" + u
		}
		var opts []client.Option
		if *token != "" {
			opts = append(opts, client.WithAuth(strings.TrimSpace(*token)))
		}
		if *ns != "" {
			opts = append(opts, client.WithNamespace(*ns))
		}
		opt, err := caOpt()
		if err != nil {
			return nil, err
		}
		if opt != nil {
			opts = append(opts, opt)
		}
		cl, err := client.New(u, opts...)
		if err != nil {
			return nil, usagef("--server: %v", err)
		}
		return cl, nil
	}
}

// cacertFlag defines --cacert on fs (default $LAMBDADB_CACERT) and returns
// a function that yields the client option trusting its CAs (nil when
// unset).
func (c *cli) cacertFlag(fs *flag.FlagSet) func() (client.Option, error) {
	file := fs.String("cacert", c.getenv("LAMBDADB_CACERT"), "trust the CA certificate(s) in PEM `FILE` for https:// servers (a node's <data>/ca.pem); $LAMBDADB_CACERT sets the default")
	return func() (client.Option, error) {
		if *file == "" {
			return nil, nil
		}
		b, err := os.ReadFile(*file)
		if err != nil {
			return nil, usagef("--cacert: %v", err)
		}
		if !bytes.Contains(b, []byte("-----BEGIN CERTIFICATE-----")) {
			return nil, usagef("--cacert: %s holds no PEM certificate", *file)
		}
		return client.WithCACert(b), nil
	}
}

var putCommand = &command{
	name:    "put",
	short:   "store a value",
	args:    "[--server URL] [--if-match N | --if-absent] KEY (VALUE | - | --file FILE)",
	summary: "Store a value (\"-\" reads it from stdin) and print the version written.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		file := fs.String("file", "", "read the value from `FILE`")
		ifMatch := fs.Uint64("if-match", 0, "write only if the key is at version `N`")
		ifAbsent := fs.Bool("if-absent", false, "write only if the key does not exist")
		return func(ctx context.Context, args []string) error {
			var value []byte
			var err error
			switch {
			case len(args) == 0:
				return usagef("missing KEY")
			case len(args) > 2:
				return usagef("too many arguments")
			case *file != "" && len(args) == 2:
				return usagef("give VALUE or --file, not both")
			case *file != "":
				value, err = os.ReadFile(*file)
			case len(args) == 1:
				return usagef("missing VALUE (or - for stdin, or --file)")
			case args[1] == "-":
				value, err = io.ReadAll(c.stdin)
			default:
				value = []byte(args[1])
			}
			if err != nil {
				return err
			}
			var opts []client.WriteOption
			if isSet(fs, "if-match") {
				if *ifMatch == 0 {
					return usagef("--if-match: versions start at 1")
				}
				opts = append(opts, client.IfMatch(*ifMatch))
			}
			if *ifAbsent {
				if len(opts) > 0 {
					return usagef("give --if-match or --if-absent, not both")
				}
				opts = append(opts, client.IfNoneMatch())
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			version, err := cl.Put(ctx, args[0], value, opts...)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.stdout, version)
			return err
		}
	},
}

var getCommand = &command{
	name:    "get",
	short:   "print a value",
	args:    "[--server URL] [--consistency linearizable|session|stale] KEY",
	summary: "Print a key's value, as stored, to stdout (on a terminal, with a newline after a value that lacks one).",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		consistency := fs.String("consistency", "", "read `level`: linearizable, session or stale (default: linearizable)")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one KEY")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			var opts []client.ReadOption
			if *consistency != "" {
				opts = append(opts, client.WithConsistency(client.Consistency(*consistency)))
			}
			item, found, err := cl.Get(ctx, args[0], opts...)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("%q not found", args[0])
			}
			return writeValue(c.stdout, item.Value)
		}
	},
}

var delCommand = &command{
	name:    "del",
	short:   "delete a key",
	args:    "[--server URL] [--if-match N] KEY",
	summary: "Delete a key; prints \"deleted\" or \"not found\".",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		ifMatch := fs.Uint64("if-match", 0, "delete only if the key is at version `N`")
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one KEY")
			}
			var opts []client.WriteOption
			if isSet(fs, "if-match") {
				if *ifMatch == 0 {
					return usagef("--if-match: versions start at 1")
				}
				opts = append(opts, client.IfMatch(*ifMatch))
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			deleted, err := cl.Delete(ctx, args[0], opts...)
			if err != nil {
				return err
			}
			msg := "deleted"
			if !deleted {
				msg = "not found"
			}
			_, err = fmt.Fprintln(c.stdout, msg)
			return err
		}
	},
}

// scanPageSize is the page size scan uses to fetch all keys (a variable
// so tests can make it small).
var scanPageSize = 1000

var scanCommand = &command{
	name:  "scan",
	short: "list keys and values in key order",
	args:  "[--server URL] [--prefix P] [--start K] [--end K] [--limit N] [--json] [--consistency C]",
	summary: "List keys in key order, one \"key<TAB>value\" line each (--json: one JSON object\n" +
		"{\"key\",\"value\"(base64),\"version\"} per line). Fetches every page unless --limit is given.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		prefix := fs.String("prefix", "", "only keys beginning with `P`")
		start := fs.String("start", "", "first `key` (inclusive)")
		end := fs.String("end", "", "end `key` (exclusive)")
		limit := fs.Int("limit", 0, "print at most `N` items (one request, N <= 10000)")
		asJSON := fs.Bool("json", false, "print JSON lines")
		consistency := fs.String("consistency", "", "read `level`: linearizable, session or stale")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			if isSet(fs, "limit") && *limit < 1 {
				return usagef("--limit must be positive")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			opts := client.ScanOptions{Start: *start, End: *end, Limit: *limit,
				Consistency: client.Consistency(*consistency)}
			print := c.itemPrinter(*asJSON)
			if *limit > 0 {
				page, err := cl.Scan(ctx, *prefix, opts)
				if err != nil {
					return err
				}
				for _, it := range page.Items {
					if err := print(it); err != nil {
						return err
					}
				}
				if page.More {
					fmt.Fprintf(c.stderr, "(more keys follow; continue with --start %s)\n", strconv.Quote(page.Next))
				}
				return nil
			}
			opts.Limit = scanPageSize
			for it, err := range cl.ScanAll(ctx, *prefix, opts) {
				if err != nil {
					return err
				}
				if err := print(it); err != nil {
					return err
				}
			}
			return nil
		}
	},
}

func (c *cli) itemPrinter(asJSON bool) func(client.Item) error {
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		return func(it client.Item) error {
			return enc.Encode(struct {
				Key     string `json:"key"`
				Value   []byte `json:"value"`
				Version uint64 `json:"version"`
			}{it.Key, it.Value, it.Version})
		}
	}
	return func(it client.Item) error {
		_, err := fmt.Fprintf(c.stdout, "%s\t%s\n", it.Key, it.Value)
		return err
	}
}

var statusCommand = &command{
	name:    "status",
	short:   "show the cluster's nodes and shards",
	args:    "[--server URL]",
	summary: "Show the cluster's nodes and shards.",
	flags: withClient(func(ctx context.Context, c *cli, cl *client.Client) error {
		st, err := cl.Cluster(ctx)
		if err != nil {
			return err
		}
		return printStatus(c.stdout, st)
	}),
}

// printStatus prints st as two aligned tables: the nodes with their
// membership state, and the shards.
func printStatus(w io.Writer, st client.ClusterStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDR\tUP\tSTATE")
	for _, n := range st.Nodes {
		id := n.ID
		if id == st.Node {
			id += "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", id, n.Addr, yesNo(n.Up), stateText(n.State))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tLEADER\tREPLICAS\tAPPLIED")
	for _, s := range st.Shards {
		leader := s.Leader
		if leader == "" {
			leader = "-"
		}
		nodes := make([]string, len(s.Replicas))
		applied := make([]string, len(s.Replicas))
		for i, r := range s.Replicas {
			nodes[i] = r.Node
			applied[i] = strconv.FormatUint(r.Applied, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.ID, leader, strings.Join(nodes, ","), strings.Join(applied, ","))
	}
	return tw.Flush()
}

// isSet reports whether the flag was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
