package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"

	"lambdadb/client"
)

var fnCommand = &command{
	name:    "fn",
	short:   "deploy, invoke and inspect functions",
	summary: "Manage WebAssembly functions (see docs/handlers.md).",
	sub:     []*command{fnDeployCommand, fnInvokeCommand, fnListCommand, fnStatsCommand, fnLogsCommand, fnRmCommand},
}

var fnDeployCommand = &command{
	name:  "fn deploy",
	short: "upload a module as a function",
	args:  "[--server URL] [--memory-mb 64] [--timeout-ms 1000] [--max-instances 100] NAME FILE.wasm",
	summary: "Upload a WebAssembly module built with lambdadb/sdk/fn\n" +
		"(GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared) as function NAME,\n" +
		"replacing any earlier version. Prints the deployed configuration.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		var o client.DeployOptions
		fs.IntVar(&o.MemoryMB, "memory-mb", 0, "memory cap per sandbox in `MB` (server default 64)")
		fs.IntVar(&o.TimeoutMS, "timeout-ms", 0, "time cap per call in `ms` (server default 1000)")
		fs.IntVar(&o.MaxInstances, "max-instances", 0, "concurrent sandboxes per node, `N` (server default 100)")
		return func(ctx context.Context, args []string) error {
			if len(args) != 2 {
				return usagef("want NAME FILE.wasm")
			}
			module, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stderr, "deploying %s (%d bytes)...\n", args[0], len(module))
			f, err := cl.Deploy(ctx, args[0], module, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deployed %s version %d sha256 %s\nmemory %d MB, timeout %d ms, max instances %d, entry points %s\n",
				f.Name, f.Version, f.SHA256, f.MemoryMB, f.TimeoutMS, f.MaxInstances, strings.Join(f.Entrypoints, ", "))
			return nil
		}
	},
}

var fnInvokeCommand = &command{
	name:  "fn invoke",
	short: "call a function",
	args:  "[--server URL] [--key K] [--consistency session] [-v] NAME [REQUEST | - | --file FILE]",
	summary: "Call a function's Handle entry point and print its response. With --key it runs\n" +
		"on the node holding K's shard. -v prints the start kind, node and meters to stderr.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		key := fs.String("key", "", "place the call by `key` (the handler sees it as Ctx.Key)")
		consistency := fs.String("consistency", "", "the handler's reads: linearizable, session or stale (default session)")
		file := fs.String("file", "", "read the request from `FILE`")
		verbose := fs.Bool("v", false, "print start kind, node and meters to stderr")
		return func(ctx context.Context, args []string) error {
			var req []byte
			var err error
			switch {
			case len(args) == 0:
				return usagef("missing NAME")
			case len(args) > 2:
				return usagef("too many arguments")
			case *file != "" && len(args) == 2:
				return usagef("give REQUEST or --file, not both")
			case *file != "":
				req, err = os.ReadFile(*file)
			case len(args) == 2 && args[1] == "-":
				req, err = io.ReadAll(c.stdin)
			case len(args) == 2:
				req = []byte(args[1])
			}
			if err != nil {
				return err
			}
			var opts []client.InvokeOption
			if isSet(fs, "key") {
				opts = append(opts, client.WithKey(*key))
			}
			if *consistency != "" {
				opts = append(opts, client.WithHandlerConsistency(client.Consistency(*consistency)))
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			inv, err := cl.Invoke(ctx, args[0], req, opts...)
			if err != nil {
				return err
			}
			if *verbose {
				fmt.Fprintf(c.stderr, "start %s on %s, %d µs, billed %d ms\n", inv.Start, inv.Node, inv.DurationUS, inv.BilledMS)
			}
			return writeValue(c.stdout, inv.Body)
		}
	},
}

var fnListCommand = &command{
	name:    "fn list",
	short:   "list functions",
	args:    "[--server URL]",
	summary: "List the deployed functions with their cluster-wide meters.",
	flags: withClient(func(ctx context.Context, c *cli, cl *client.Client) error {
		fns, err := cl.Functions(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tSHA256\tMEMORY\tTIMEOUT\tCALLS\tERRORS\tP50\tP99\tRUNNING/PAUSED/STOPPED/COLD")
		for _, f := range fns {
			s := f.Sandboxes
			fmt.Fprintf(tw, "%s\t%d\t%.12s\t%d MB\t%d ms\t%d\t%d\t%s\t%s\t%d/%d/%d/%d\n", f.Name, f.Version, f.SHA256,
				f.MemoryMB, f.TimeoutMS, f.Invocations, f.Errors, fmtUS(f.P50US), fmtUS(f.P99US), s.Running, s.Paused, s.Stopped, s.Cold)
		}
		return tw.Flush()
	}),
}

var fnStatsCommand = &command{
	name:    "fn stats",
	short:   "show a function's configuration and meters",
	args:    "[--server URL] NAME",
	summary: "Show a function's configuration and meters, summed over the nodes and per node.",
	flags: withName(func(ctx context.Context, c *cli, cl *client.Client, name string) error {
		f, err := cl.Function(ctx, name)
		if err != nil {
			return err
		}
		w := c.stdout
		fmt.Fprintf(w, "%s version %d sha256 %s (%d bytes)\n", f.Name, f.Version, f.SHA256, f.Size)
		fmt.Fprintf(w, "memory %d MB, timeout %d ms, max instances %d, entry points %s, deployed %s",
			f.MemoryMB, f.TimeoutMS, f.MaxInstances, strings.Join(f.Entrypoints, ", "), f.DeployedAt.Format("2006-01-02 15:04:05Z07:00"))
		if !f.CreatedAt.IsZero() {
			fmt.Fprintf(w, ", created %s", f.CreatedAt.Format("2006-01-02 15:04:05Z07:00"))
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nNODE\tCALLS\tERRORS\tTHROTTLES\tWARM\tRESTART\tCOLD\tP50\tP99\tBILLED\tGB-S\tKV CALLS\tRUNNING/PAUSED/STOPPED/COLD")
		row := func(name string, s client.FunctionStats) {
			b := s.Sandboxes
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d ms\t%.6f\t%d\t%d/%d/%d/%d\n", name, s.Invocations, s.Errors, s.Throttles,
				s.Starts["warm"], s.Starts["restart"], s.Starts["cold"], fmtUS(s.P50US), fmtUS(s.P99US),
				s.BilledMS, s.GBSeconds, s.KVCalls, b.Running, b.Paused, b.Stopped, b.Cold)
		}
		var nodes []string
		for id := range f.Nodes {
			nodes = append(nodes, id)
		}
		sort.Strings(nodes)
		for _, id := range nodes {
			if ns := f.Nodes[id]; ns.Error != "" {
				fmt.Fprintf(tw, "%s\t(no answer: %s)\n", id, ns.Error)
			} else {
				row(id, ns.FunctionStats)
			}
		}
		row("total", f.FunctionStats)
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(f.ErrorsByCode) > 0 {
			var codes []string
			for code, n := range f.ErrorsByCode {
				codes = append(codes, fmt.Sprintf("%s %d", code, n))
			}
			sort.Strings(codes)
			fmt.Fprintf(w, "errors: %s\n", strings.Join(codes, ", "))
		}
		return nil
	}),
}

var fnLogsCommand = &command{
	name:    "fn logs",
	short:   "print a function's recent log lines",
	args:    "[--server URL] NAME",
	summary: "Print the recent lines a function logged (Ctx.Log, stdout, stderr) on every node.",
	flags: withName(func(ctx context.Context, c *cli, cl *client.Client, name string) error {
		lines, err := cl.FunctionLogs(ctx, name)
		if err != nil {
			return err
		}
		for _, l := range lines {
			fmt.Fprintf(c.stdout, "%s %s %s\n", l.Time.Format("15:04:05.000"), l.Node, l.Line)
		}
		return nil
	}),
}

var fnRmCommand = &command{
	name:    "fn rm",
	short:   "delete a function",
	args:    "[--server URL] NAME",
	summary: "Delete a function. Calls already running finish.",
	flags: withName(func(ctx context.Context, c *cli, cl *client.Client, name string) error {
		if err := cl.RemoveFunction(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "deleted %s\n", name)
		return nil
	}),
}

// fmtUS formats microseconds for tables.
func fmtUS(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.1fms", us/1000)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

// isTerminal reports whether w is a terminal (a file whose termios can
// be read: not a pipe, a regular file or /dev/null).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// writeValue writes a value as stored; on a terminal it ends a value that
// does not end in a newline with one, so the shell prompt starts on its
// own line. Piped or redirected output stays byte-exact.
func writeValue(w io.Writer, v []byte) error {
	if _, err := w.Write(v); err != nil {
		return err
	}
	if len(v) > 0 && v[len(v)-1] != '\n' && isTerminal(w) {
		_, err := io.WriteString(w, "\n")
		return err
	}
	return nil
}

// withClient builds the flags of a command that takes no argument beyond
// --server: run gets the client.
func withClient(run func(ctx context.Context, c *cli, cl *client.Client) error) func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
	return func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			return run(ctx, c, cl)
		}
	}
}

// withName is the flags function of a client command that takes exactly
// one NAME: it defines --server and runs run with a client.
func withName(run func(ctx context.Context, c *cli, cl *client.Client, name string) error) func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
	return func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want NAME")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			return run(ctx, c, cl, args[0])
		}
	}
}
