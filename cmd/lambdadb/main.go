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
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args (without the program name) and
// returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{
		stdin:  os.Stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: os.Getenv,
		notifyContext: func(ctx context.Context) (context.Context, context.CancelFunc) {
			return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		},
	}
	return c.run(args)
}

// cli holds a command line's I/O; tests replace its fields.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// notifyContext returns a context that ends on SIGINT or SIGTERM.
	notifyContext func(context.Context) (context.Context, context.CancelFunc)
	// ready, when set, is called by serve with the address it listens on.
	ready func(addr string)
}

// command is one subcommand.
type command struct {
	name    string
	args    string // synopsis after the name
	short   string // one line for the command list
	summary string // description for the command's usage
	// flags defines the command's flags on fs and returns the function
	// that runs it with the positional arguments.
	flags func(c *cli, fs *flag.FlagSet) func(ctx context.Context, args []string) error
	// sub, for a command group such as "fn", lists its subcommands
	// (named "fn deploy", ...); flags is then unused.
	sub []*command
}

// resolve picks a group's subcommand from args; it returns cmd itself for
// a plain command, or nil and an error message.
func resolve(cmd *command, args []string) (*command, []string, string) {
	if cmd.sub == nil {
		return cmd, args, ""
	}
	if len(args) == 0 {
		return nil, nil, fmt.Sprintf("%s needs a subcommand: %s", cmd.name, subNames(cmd))
	}
	for _, sc := range cmd.sub {
		if sc.name == cmd.name+" "+args[0] {
			return sc, args[1:], ""
		}
	}
	return nil, nil, fmt.Sprintf("unknown command %q; %s has %s", cmd.name+" "+args[0], cmd.name, subNames(cmd))
}

func subNames(cmd *command) string {
	var names []string
	for _, sc := range cmd.sub {
		names = append(names, strings.TrimPrefix(sc.name, cmd.name+" "))
	}
	return strings.Join(names, ", ")
}

// commands lists the subcommands in help order.
var commands []*command

func init() {
	commands = []*command{
		serveCommand,
		putCommand,
		getCommand,
		delCommand,
		scanCommand,
		queryCommand,
		statusCommand,
		nodeCommand,
		fnCommand,
		feedCommand,
		triggerCommand,
		tokenCommand,
		nsCommand,
	}
}

func lookup(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

// usageError is a command-line mistake: exit status 2 and usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

func (c *cli) run(args []string) int {
	if len(args) == 0 {
		c.usage(c.stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		return c.help(rest)
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(c.stderr, "lambdadb: unknown command %q\nRun 'lambdadb help' for usage.\n", name)
		return 2
	}
	cmd, rest, msg := resolve(cmd, rest)
	if cmd == nil {
		fmt.Fprintf(c.stderr, "lambdadb: %s\nRun 'lambdadb help %s' for usage.\n", msg, name)
		return 2
	}
	fs := newFlagSet(cmd)
	runCmd := cmd.flags(c, fs)
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		commandUsage(c.stdout, cmd, fs)
		return 0
	}
	if err == nil {
		ctx, stop := c.notifyContext(context.Background())
		err = runCmd(ctx, pos)
		stop()
	}
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "lambdadb %s: %v\n", cmd.name, err)
		commandUsage(c.stderr, cmd, fs)
		return 2
	default:
		fmt.Fprintf(c.stderr, "lambdadb: %v\n", errorMessage(err))
		return 1
	}
}

func (c *cli) help(args []string) int {
	switch len(args) {
	case 0:
		c.usage(c.stdout)
		return 0
	case 1, 2:
		if cmd := lookup(args[0]); cmd != nil && (len(args) == 1 || cmd.sub != nil) {
			if cmd.sub != nil && len(args) == 1 {
				fmt.Fprintf(c.stdout, "usage: lambdadb %s <subcommand> [arguments]\n\n%s\n\nSubcommands:\n", cmd.name, cmd.summary)
				width := 16
				for _, sc := range cmd.sub {
					width = max(width, len(sc.name))
				}
				for _, sc := range cmd.sub {
					fmt.Fprintf(c.stdout, "  %-*s %s\n", width, sc.name, sc.short)
				}
				return 0
			}
			sc, _, msg := resolve(cmd, args[1:])
			if sc == nil {
				fmt.Fprintf(c.stderr, "lambdadb: %s\n", msg)
				return 2
			}
			cmd = sc
			fs := newFlagSet(cmd)
			cmd.flags(c, fs)
			commandUsage(c.stdout, cmd, fs)
			return 0
		}
		if lookup(args[0]) == nil {
			fmt.Fprintf(c.stderr, "lambdadb: unknown command %q\nRun 'lambdadb help' for usage.\n", args[0])
			return 2
		}
	}
	fmt.Fprintln(c.stderr, "usage: lambdadb help [command [subcommand]]")
	return 2
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `lambdadb is a distributed key-value database that runs functions next to its data.

Usage:
  lambdadb <command> [arguments]

Commands:
`)
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", cmd.name, cmd.short)
	}
	fmt.Fprint(w, `  help     show help for a command

Client commands take --server URL (default $LAMBDADB_SERVER, then
http://127.0.0.1:7070) and, for an https:// server, --cacert FILE (default
$LAMBDADB_CACERT). Run 'lambdadb help <command>' for its flags.
`)
}

func newFlagSet(cmd *command) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed by run
	fs.Usage = func() {}
	return fs
}

func commandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: lambdadb %s %s\n\n%s\n", cmd.name, cmd.args, cmd.summary)
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(w, "\nFlags:")
			first = false
		}
		arg, usage := flag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			usage += fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s%s\n        %s\n", f.Name, arg, usage)
	})
}

// parseInterspersed parses flags that may appear before, between or after
// positional arguments ("get KEY --consistency stale"); after "--" every
// argument is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// errorMessage formats err for the "lambdadb: " line.
func errorMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "client: ")
}
