package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"lambdadb/client"
)

var tokenCommand = &command{
	name:  "token",
	short: "bootstrap, create, list and revoke access tokens (secure mode)",
	summary: "Manage the access tokens of a cluster in secure mode (serve --cluster-secret-file).\n" +
		"Bootstrap once for the first admin token; with it, create a token per application\n" +
		"with the namespace and scopes it needs; revoke one to refuse it on every node.",
	sub: []*command{tokenBootstrapCommand, tokenCreateCommand, tokenListCommand, tokenRevokeCommand},
}

var tokenBootstrapCommand = &command{
	name:  "token bootstrap",
	short: "get the cluster's first admin token (once per cluster)",
	args:  "[--server URL] [--cacert FILE]",
	summary: "Ask a new secure-mode cluster for its first admin token and print it. This works\n" +
		"once per cluster; keep the token safe (export LAMBDADB_TOKEN=...) and create\n" +
		"narrower tokens for applications with 'lambdadb token create'.",
	flags: withClient(func(ctx context.Context, c *cli, cl *client.Client) error {
		is, err := cl.Bootstrap(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, is.Token)
		fmt.Fprintf(c.stderr, "admin token, accessor %s: shown only now; export LAMBDADB_TOKEN=<token> to use it\n", is.Accessor)
		return nil
	}),
}

var tokenCreateCommand = &command{
	name:  "token create",
	short: "create a token with a namespace and scopes",
	args:  "[--server URL] [--token T] [--ns NAMESPACE] [--ttl DURATION] SCOPE...",
	summary: "Create a token for namespace NAMESPACE (default: default) holding SCOPEs:\n" +
		"kv:read:PREFIX, kv:write:PREFIX, feed:read:PREFIX (PREFIX * = the whole namespace),\n" +
		"query, fn:deploy, fn:invoke, fn:logs, trigger:admin, metrics, admin. Prints the token\n" +
		"on stdout (shown only now) and its accessor on stderr. Needs an admin token.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		ns := fs.String("ns", "default", "the token's `namespace`")
		ttl := fs.Duration("ttl", 0, "the token expires after this `duration` (0: never)")
		asJSON := fs.Bool("json", false, "print the whole answer as JSON")
		return func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return usagef("want at least one SCOPE (e.g. kv:read:* query)")
			}
			if *ttl < 0 || (*ttl > 0 && *ttl < time.Second) {
				return usagef("--ttl must be 0 or at least 1s")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			is, err := cl.CreateToken(ctx, *ns, args, *ttl)
			if err != nil {
				return err
			}
			if *asJSON {
				return json.NewEncoder(c.stdout).Encode(is)
			}
			fmt.Fprintln(c.stdout, is.Token)
			exp := "never expires"
			if is.Expires != nil {
				exp = "expires " + is.Expires.Format(time.RFC3339)
			}
			fmt.Fprintf(c.stderr, "token %s for namespace %s, scopes %s, %s\n", is.Accessor, is.Namespace, strings.Join(is.Scopes, " "), exp)
			return nil
		}
	},
}

var tokenListCommand = &command{
	name:    "token list",
	short:   "list the tokens (no secrets)",
	args:    "[--server URL] [--token T]",
	summary: "List every token by accessor with its namespace, scopes and expiry. Needs an admin token.",
	flags: withClient(func(ctx context.Context, c *cli, cl *client.Client) error {
		list, err := cl.Tokens(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCESSOR\tNAMESPACE\tSCOPES\tCREATED\tEXPIRES")
		for _, t := range list {
			exp := "never"
			if t.Expires != nil {
				exp = t.Expires.Format(time.RFC3339)
				if t.Expired {
					exp += " (expired)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Accessor, t.Namespace, strings.Join(t.Scopes, " "), t.Created.Format(time.RFC3339), exp)
		}
		return tw.Flush()
	}),
}

var tokenRevokeCommand = &command{
	name:  "token revoke",
	short: "revoke a token on every node",
	args:  "[--server URL] [--token T] ACCESSOR",
	summary: "Revoke the token with this accessor: every node refuses it from now on (a node that\n" +
		"cannot be told at once stops accepting it within 30 s of reading the token records\n" +
		"again). Needs an admin token.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		newClient := c.serverFlag(fs)
		return func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one ACCESSOR (see 'lambdadb token list')")
			}
			cl, err := newClient()
			if err != nil {
				return err
			}
			unreached, err := cl.RevokeToken(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked %s\n", args[0])
			if len(unreached) > 0 {
				fmt.Fprintf(c.stderr, "not told at once (they refuse it within 30 s once they can read the token records): %s\n", strings.Join(unreached, ", "))
			}
			return nil
		}
	},
}
